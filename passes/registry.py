"""The pass registry: kebab-case name -> pass class, and textual pipelines.

One pipeline string describes a whole compile (`"kiln-canonicalize,fuse{solver=ilp
time-limit=5},cse"`), so the CLI, the compile driver and tests all go through
`parse_pipeline`. Kiln passes register themselves with `@register_pass`; xDSL's generic
`canonicalize`, `cse` and `dce` are registered lazily so `import passes` does not pull in
xDSL's whole transform zoo.

Pipeline text is parsed by xDSL (`xdsl.utils.arg_spec.parse_pipeline`, the parser behind
`PassPipeline.parse_spec`); each pass is then built with xDSL's `from_spec`. We call the two
halves ourselves instead of `PassPipeline.parse_spec` only to check option names and types
first, so a typo says which pass and option it hit, on one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, TypeVar, get_args, get_type_hints

from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import ArgSpec
from xdsl.utils.arg_spec import parse_pipeline as parse_arg_specs
from xdsl.utils.exceptions import ArgSpecParseError
from xdsl.utils.hints import isa

# The pipeline the compile driver runs when the user names none. Folding first turns
# constant subexpressions into literals that the canonical rules (x + 0 -> x) then see;
# kiln-canonicalize also deletes dead ops as it goes; cse merges what is left equal and
# dce sweeps what cse orphaned.
DEFAULT_PIPELINE = "fold-constants,kiln-canonicalize,cse,dce"

# Modules whose import registers Kiln's own passes. A new pass file adds its module here
# (one line), so `parse_pipeline` knows it without the caller importing it first.
BUILTIN_PASS_MODULES = (
    "passes.canonicalize",
    "passes.experts",
    "passes.fold_constants",
    "passes.fusion",
    "passes.memory",
    "passes.quantization",
    "passes.reuse_factor",
    "passes.shard",
    "passes.pipeline_stages",
)

# xDSL passes Kiln pipelines may name, loaded on first use.
_XDSL_PASSES = {
    "canonicalize": ("xdsl.transforms.canonicalize", "CanonicalizePass"),
    "cse": ("xdsl.transforms.common_subexpression_elimination", "CommonSubexpressionElimination"),
    "dce": ("xdsl.transforms.dead_code_elimination", "DeadCodeElimination"),
}

_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_PASSES: dict[str, type[ModulePass]] = {}
_builtins_loaded = False

P = TypeVar("P", bound=type[ModulePass])


class PipelineError(ValueError):
    """A pipeline string that cannot be turned into passes (syntax, name or option)."""


class UnknownPassError(PipelineError):
    """A pass name nobody registered; the message lists the names that exist."""


class PassOptionError(PipelineError):
    """An option a pass does not have, or a value of the wrong type."""


def register_pass(cls: P) -> P:
    """Class decorator: make a `ModulePass` reachable by its `name` in pipeline strings.

    Checked here rather than at parse time so a badly declared pass fails when its file
    is imported, next to the mistake.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _KEBAB.match(name):
        raise TypeError(f"{cls.__qualname__}: pass name {name!r} must be a kebab-case string")
    if not (isinstance(cls, type) and issubclass(cls, ModulePass)):
        raise TypeError(f"{cls!r} is not an xDSL ModulePass")
    # Looked up on the class itself: an undecorated subclass inherits ModulePass's params,
    # and its annotated options would silently not be fields.
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen:
        raise TypeError(f"pass {name!r} ({cls.__qualname__}) must be a @dataclass(frozen=True)")
    if name in _XDSL_PASSES:
        raise ValueError(f"pass name {name!r} is xDSL's; give {cls.__qualname__} another name")
    previous = _PASSES.get(name)
    # Re-registering the same class (a module reload) is harmless; a second class is not.
    if previous is not None and _qualified(previous) != _qualified(cls):
        raise ValueError(f"pass name {name!r} is already registered by {_qualified(previous)}")
    _PASSES[name] = cls
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_PASS_MODULES:
            importlib.import_module(module)


def known_passes() -> list[str]:
    """Every name a pipeline may use, sorted (what error messages and `--help` list)."""
    _load_builtins()
    return sorted({*_PASSES, *_XDSL_PASSES})


def get_pass_class(name: str) -> type[ModulePass]:
    """The pass class registered under `name`; `UnknownPassError` lists the known names."""
    _load_builtins()
    if name in _PASSES:
        return _PASSES[name]
    if name in _XDSL_PASSES:
        module, attr = _XDSL_PASSES[name]
        return getattr(importlib.import_module(module), attr)
    raise UnknownPassError(f"unknown pass {name!r}; known passes: {', '.join(known_passes())}")


def parse_pipeline(spec: str) -> list[ModulePass]:
    """Pass instances for a pipeline string such as `"kiln-canonicalize,fuse{solver=ilp}"`.

    Raises `UnknownPassError` or `PassOptionError` (both `PipelineError`, a ValueError)
    with a one-line message naming the pass and, for options, the option.
    """
    try:
        specs = list(parse_arg_specs(spec))
    except ArgSpecParseError as err:  # a BaseException in xDSL; make it an ordinary error
        raise PipelineError(f"bad pipeline {spec!r} {_one_line(err)}") from None
    return [_build(get_pass_class(s.name), s) for s in specs]


def pass_options(cls: type[ModulePass]) -> dict[str, str]:
    """Option name (as written in pipelines) -> its type and default, for messages and help."""
    hints = get_type_hints(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
        out[f.name.replace("_", "-")] = f"{_type_name(hints[f.name])}{default}"
    return out


def _build(cls: type[ModulePass], spec: ArgSpec) -> ModulePass:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    params: dict[str, tuple[Any, ...]] = {}
    written: dict[str, str] = {}  # field name -> the option as the user wrote it
    for raw, values in spec.parameters.items():
        key = raw.replace("-", "_")
        written[key] = raw
        if key not in fields:
            raise PassOptionError(
                f"pass {cls.name!r} has no option {raw!r}; options: {_describe(cls)}"
            )
        params[key] = _coerce(values, hints[key])
    try:
        return cls.from_spec(ArgSpec(spec.name, params))
    except (ValueError, TypeError) as err:
        bad = next((k for k, v in params.items() if not _fits(v, hints[k])), None)
        if bad is not None:
            shown = ",".join(repr(v) for v in spec.parameters[written[bad]]) or "no value"
            raise PassOptionError(
                f"pass {cls.name!r}: option {written[bad]!r} expects "
                f"{_type_name(hints[bad])}, got {shown}"
            ) from None
        raise PassOptionError(
            f"pass {cls.name!r}: {_one_line(err)}; options: {_describe(cls)}"
        ) from None


def _coerce(values: tuple[Any, ...], hint: Any) -> tuple[Any, ...]:
    """`time-limit=5` for a float option: xDSL would reject the int, a user would not expect it."""
    accepts = set(get_args(hint)) | {hint}
    if float in accepts and int not in accepts:
        return tuple(float(v) if type(v) is int else v for v in values)
    return values


def _fits(values: tuple[Any, ...], hint: Any) -> bool:
    """Whether xDSL's `from_spec` would accept these values for an option of type `hint`."""
    if len(values) == 0:
        return type(None) in get_args(hint)
    return (len(values) == 1 and isa(values[0], hint)) or isa(values, hint)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _describe(cls: type[ModulePass]) -> str:
    opts = pass_options(cls)
    return ", ".join(f"{k}: {v}" for k, v in opts.items()) if opts else "(none)"


def _one_line(err: BaseException) -> str:
    """xDSL's messages span lines (the spec with a caret under it); keep column and reason."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    where = next((m for ln in lines if (m := re.fullmatch(r"\S+:\d+:(\d+)", ln))), None)
    reason = lines[-1] if lines else type(err).__name__
    return f"at column {where.group(1)}: {reason}" if where else reason
