"""The `kiln` xDSL dialect and the context every tool parses it in."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects import arith, builtin, func
from xdsl.ir import Dialect

from ir.ops import ALL_OPS

Kiln = Dialect("kiln", list(ALL_OPS))

OPS_BY_NAME = {op.name: op for op in ALL_OPS}


def make_context() -> Context:
    """A context with builtin, func, arith and kiln loaded (what kiln IR files use)."""
    ctx = Context()
    ctx.load_dialect(builtin.Builtin)
    ctx.load_dialect(func.Func)
    ctx.load_dialect(arith.Arith)
    ctx.load_dialect(Kiln)
    return ctx
