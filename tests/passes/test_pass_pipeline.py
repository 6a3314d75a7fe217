"""passes/pipeline.py: timing, --dump-ir callbacks, and verify-after-each-pass.

(Not `test_pipeline.py`: test module names must be unique across `tests/`, and backends
have pipelines too.)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from xdsl.passes import ModulePass

import ir
from ir.ops.movement import ReshapeOp
from passes import (
    DEFAULT_PIPELINE,
    PassTiming,
    PassVerificationError,
    format_timings,
    parse_pipeline,
    run_pipeline,
)

TEXT = """
builtin.module {
  func.func @forward(%x: tensor<2x3xf32>) -> tensor<6xf32> {
    %a = "kiln.reshape"(%x) <{shape = array<i64: 3, 2>}> : (tensor<2x3xf32>) -> tensor<3x2xf32>
    %b = "kiln.reshape"(%a) <{shape = array<i64: 6>}> : (tensor<3x2xf32>) -> tensor<6xf32>
    %c = "kiln.relu"(%b) : (tensor<6xf32>) -> tensor<6xf32>
    func.return %c : tensor<6xf32>
  }
}
"""


@dataclass(frozen=True)
class BreakReshape(ModulePass):
    """Deliberately wrong: rewrites a reshape's target shape but not its result type."""

    name = "break-reshape"

    def apply(self, ctx, op) -> None:
        reshape = next(o for o in op.walk() if isinstance(o, ReshapeOp))
        reshape.properties["shape"] = ReshapeOp.make(reshape.input, shape=(6,)).properties["shape"]


@dataclass(frozen=True)
class Crash(ModulePass):
    name = "crash"

    def apply(self, ctx, op) -> None:
        raise RuntimeError("boom")


def test_timings_one_per_pass_in_order() -> None:
    module = ir.parse_module(TEXT)
    timings = run_pipeline(module, DEFAULT_PIPELINE)
    assert [t.name for t in timings] == DEFAULT_PIPELINE.split(",")
    assert all(isinstance(t, PassTiming) and t.seconds >= 0 for t in timings)
    table = format_timings(timings)
    assert table.splitlines()[-1].startswith("total") and "fold-constants" in table


def test_timing_spec_is_written_as_a_pipeline_would() -> None:
    timings = run_pipeline(ir.parse_module(TEXT), "fold-constants{max-elements=8}")
    assert timings[0].spec == "fold-constants{max-elements=8}"


def test_accepts_pass_instances_and_changes_module_in_place() -> None:
    module = ir.parse_module(TEXT)
    run_pipeline(module, parse_pipeline("kiln-canonicalize"))
    assert [op.name for op in ir.kiln_ops(ir.entry_function(module))] == [
        "kiln.reshape",
        "kiln.relu",
    ]


def test_dump_ir_called_after_each_pass_with_that_pass_text() -> None:
    module = ir.parse_module(TEXT)
    dumps: list[tuple[str, str]] = []
    run_pipeline(
        module, "kiln-canonicalize,cse", dump_ir=lambda name, text: dumps.append((name, text))
    )
    assert [name for name, _ in dumps] == ["kiln-canonicalize", "cse"]
    assert dumps[0][1].count("kiln.reshape") == 1
    assert ir.parse_module(dumps[-1][1]).is_structurally_equivalent(module)


def test_verify_names_the_pass_that_broke_the_ir() -> None:
    module = ir.parse_module(TEXT)
    with pytest.raises(
        PassVerificationError, match=r"^pass 'break-reshape' left invalid IR: kiln.reshape"
    ) as err:
        run_pipeline(
            module, [*parse_pipeline("cse"), BreakReshape(), *parse_pipeline("dce")], verify=True
        )
    assert err.value.pass_name == "break-reshape"


def test_without_verify_a_broken_pass_goes_unnoticed() -> None:
    run_pipeline(ir.parse_module(TEXT), [BreakReshape()])


def test_verify_blames_the_input_not_the_first_pass() -> None:
    module = ir.parse_module(TEXT)
    BreakReshape().apply(ir.make_context(), module)
    with pytest.raises(PassVerificationError, match="^the input IR is invalid") as err:
        run_pipeline(module, "cse", verify=True)
    assert err.value.pass_name is None


def test_a_crashing_pass_is_named_in_the_traceback() -> None:
    with pytest.raises(RuntimeError, match="boom") as err:
        run_pipeline(ir.parse_module(TEXT), [Crash()])
    assert "while running pass 'crash'" in "".join(err.value.__notes__)
