"""passes/registry.py: names to passes, pipeline text to pass instances, and its errors.

(Not `test_registry.py`: test folders have no `__init__.py`, so test module names must be
unique across `tests/`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from xdsl.passes import ModulePass

from passes import (
    DEFAULT_PIPELINE,
    PassOptionError,
    PipelineError,
    UnknownPassError,
    known_passes,
    parse_pipeline,
    register_pass,
    registry,
)
from passes.fold_constants import FoldConstantsPass


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets a test register throwaway passes without leaking them into other tests."""
    monkeypatch.setattr(registry, "_PASSES", dict(registry._PASSES))


def test_known_passes_include_kiln_and_xdsl_passes() -> None:
    names = known_passes()
    assert {"canonicalize", "cse", "dce", "kiln-canonicalize", "fold-constants"} <= set(names)
    assert names == sorted(names)


def test_default_pipeline_parses_to_its_passes() -> None:
    got = [type(p).name for p in parse_pipeline(DEFAULT_PIPELINE)]
    assert got == DEFAULT_PIPELINE.split(",")


def test_options_become_dataclass_fields() -> None:
    (p,) = parse_pipeline("fold-constants{max-elements=16}")
    assert p == FoldConstantsPass(max_elements=16)
    assert parse_pipeline("fold-constants") == [FoldConstantsPass()]
    assert parse_pipeline("") == []


def test_unknown_pass_lists_known_names_on_one_line() -> None:
    with pytest.raises(UnknownPassError) as err:
        parse_pipeline("kiln-canonicalize,fuse-everything")
    message = str(err.value)
    assert "'fuse-everything'" in message and "\n" not in message
    for name in known_passes():
        assert name in message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "fold-constants{max-elemnts=3}",
            r"pass 'fold-constants' has no option 'max-elemnts'; options: max-elements: int = 4096",
        ),
        (
            "fold-constants{max-elements=many}",
            r"pass 'fold-constants': option 'max-elements' expects int, got 'many'",
        ),
        ("fold-constants{max-elements=1.5}", r"option 'max-elements' expects int, got 1.5"),
        ("fold-constants{max-elements}", r"option 'max-elements' expects int, got no value"),
    ],
)
def test_bad_option_names_pass_and_option(spec: str, expected: str) -> None:
    with pytest.raises(PassOptionError, match=expected) as err:
        parse_pipeline(spec)
    assert "\n" not in str(err.value)


def test_syntax_error_is_an_ordinary_one_line_error() -> None:
    # xDSL raises ArgSpecParseError, a BaseException that `except Exception` would miss.
    with pytest.raises(PipelineError, match=r"at column 16: Expected argument name here") as err:
        parse_pipeline("fold-constants{")
    assert "\n" not in str(err.value)


@dataclass(frozen=True)
class ToyPass(ModulePass):
    name = "toy-pass"
    solver: str = "ilp"
    time_limit: float = 5.0
    sizes: tuple[int, ...] = (1,)

    def apply(self, ctx, op) -> None:
        pass


def test_registered_pass_gets_options_from_text(scratch_registry: None) -> None:
    register_pass(ToyPass)
    register_pass(ToyPass)  # registering the same class again (a reload) is harmless
    (p,) = parse_pipeline("toy-pass{solver=greedy time-limit=2 sizes=4,8}")
    # time-limit=2 is an int in the text; a float option accepts it.
    assert p == ToyPass(solver="greedy", time_limit=2.0, sizes=(4, 8))
    assert "toy-pass" in known_passes()
    with pytest.raises(PassOptionError, match=r"option 'time-limit' expects float, got 'soon'"):
        parse_pipeline("toy-pass{time-limit=soon}")


def test_register_pass_rejects_bad_declarations(scratch_registry: None) -> None:
    @dataclass(frozen=True)
    class Duplicate(ModulePass):
        name = "fold-constants"

        def apply(self, ctx, op) -> None:
            pass

    with pytest.raises(ValueError, match="already registered"):
        register_pass(Duplicate)

    @dataclass(frozen=True)
    class ShadowsXdsl(ModulePass):
        name = "cse"

        def apply(self, ctx, op) -> None:
            pass

    with pytest.raises(ValueError, match="xDSL's"):
        register_pass(ShadowsXdsl)

    @dataclass(frozen=True)
    class CamelCase(ModulePass):
        name = "FusePass"

        def apply(self, ctx, op) -> None:
            pass

    with pytest.raises(TypeError, match="kebab-case"):
        register_pass(CamelCase)

    class NotFrozen(ModulePass):
        name = "not-frozen"

        def apply(self, ctx, op) -> None:
            pass

    with pytest.raises(TypeError, match="frozen"):
        register_pass(NotFrozen)
