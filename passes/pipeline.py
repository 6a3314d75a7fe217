"""Running a list of passes: timing each, verifying between them, dumping IR after each.

xDSL's `PassPipeline.apply` runs passes with a callback but neither times them nor says
which pass broke the IR. A compile report needs per-pass times, `--dump-ir` needs the text
after every pass, and a pass author needs "pass 'fuse' left invalid IR: ..." instead of a
verifier error three passes later; this file adds exactly those.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import ArgSpec
from xdsl.utils.exceptions import VerifyException

from ir import make_context, print_module
from passes.registry import parse_pipeline

DumpIR = Callable[[str, str], None]


@dataclass(frozen=True)
class PassTiming:
    """Wall time of one pass run; `spec` is the pass as a pipeline would write it."""

    name: str
    seconds: float
    spec: str = ""


class PassVerificationError(RuntimeError):
    """The module did not verify after a pass (`pass_name`), or before any (`None`)."""

    def __init__(self, pass_name: str | None, detail: str) -> None:
        self.pass_name = pass_name
        where = f"pass {pass_name!r} left invalid IR" if pass_name else "the input IR is invalid"
        super().__init__(f"{where}: {detail}")


def run_pipeline(
    module: ModuleOp,
    passes: Sequence[ModulePass] | str,
    *,
    verify: bool = False,
    dump_ir: DumpIR | None = None,
    ctx: Context | None = None,
) -> list[PassTiming]:
    """Apply `passes` (instances, or a pipeline string) to `module` in place, in order.

    With `verify`, the module is checked before the first pass (so a bad input is not
    blamed on a pass) and after each pass, raising `PassVerificationError`. `dump_ir`
    is called as `dump_ir(pass_name, ir_text)` after each pass. A pass that raises gets
    a note naming it, so tracebacks from deep inside a rewrite still say which pass ran.
    """
    if isinstance(passes, str):
        passes = parse_pipeline(passes)
    ctx = ctx or make_context()
    if verify:
        _verify(module, None)
    timings: list[PassTiming] = []
    for p in passes:
        name = type(p).name
        start = time.perf_counter()
        try:
            p.apply(ctx, module)
        except Exception as err:
            err.add_note(f"while running pass {name!r} ({_spec(p)})")
            raise
        timings.append(PassTiming(name, time.perf_counter() - start, _spec(p)))
        if verify:
            _verify(module, name)
        if dump_ir is not None:
            dump_ir(name, print_module(module))
    return timings


def format_timings(timings: Sequence[PassTiming]) -> str:
    """A small table for reports and `--timing`: one line per pass, then the total."""
    total = sum(t.seconds for t in timings)
    width = max([len(t.spec or t.name) for t in timings] + [5])
    lines = [f"{t.spec or t.name:<{width}}  {t.seconds * 1e3:9.3f} ms" for t in timings]
    lines.append(f"{'total':<{width}}  {total * 1e3:9.3f} ms")
    return "\n".join(lines)


def _verify(module: ModuleOp, pass_name: str | None) -> None:
    try:
        module.verify()
    except VerifyException as err:
        # The verifier's first line says what is wrong; the rest is the module, which
        # --dump-ir shows better.
        raise PassVerificationError(pass_name, str(err).strip().splitlines()[0]) from err


def _spec(p: ModulePass) -> str:
    """The pass as a user writes it (`fold-constants{max-elements=8}`; xDSL prints `_`)."""
    try:
        spec = p.spec()
    except Exception:  # noqa: BLE001 - a pass whose option type xDSL cannot print
        return type(p).name
    return str(ArgSpec(spec.name, {k.replace("_", "-"): v for k, v in spec.parameters.items()}))
