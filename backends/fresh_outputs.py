"""Which outputs of a compiled function a backend must copy on every call.

An output computed only from constants and parameters (a `zeros_like` folded to one
constant buffer, Switch Transformer's `next_states = zeros_like(hidden)`) or one that is
an input passed through (a `clone` lowered to nothing) would be the same storage on every
call. Eager returns a fresh tensor; callers, Dynamo's own code between graphs included,
then write into it in place (`next_states[idx] = expert(...)`), and the next call would
return the written buffer. Backends clone the outputs at these positions.
"""

from __future__ import annotations

from xdsl.dialects import func

from ir.ops.sources import ConstantOp, ParamOp
from ir.program import Program


def shared_output_positions(program: Program) -> tuple[int, ...]:
    """Positions of the returned values that do not depend on any input, or are an input."""
    block = program.forward.body.block
    inputs = set(block.args)
    constant = set()
    for op in block.ops:
        if isinstance(op, (ConstantOp, ParamOp)) or (
            op.operands and all(o in constant for o in op.operands) and not isinstance(op, func.ReturnOp)
        ):
            constant.update(op.results)
    ret = next(op for op in block.ops if isinstance(op, func.ReturnOp))
    return tuple(i for i, v in enumerate(ret.operands) if v in constant or v in inputs)
