"""Running a kiln function with a hook on operands, and re-running only its tail.

Calibration records what flows into each layer; sensitivity measurement runs the model
hundreds of times with one layer's operands replaced by their quantized values. Both
need the reference interpreter with two additions, kept here rather than in
`ir.interpreter` so that the interpreter stays the plain semantics:

- `hook(index, op, operands) -> operands` sees (and may replace) the operand tensors of
  each op before it runs; `index` is the op's position in the function body;
- `run_traced(..., start=i, cache=env)` reuses every value computed before op i from an
  earlier run, so quantizing layer i costs only the ops after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from ir.core import KilnOp
from ir.ops.sources import ParamOp

Hook = Callable[[int, Operation, list[torch.Tensor]], list[torch.Tensor]]


def body_ops(fn: func.FuncOp) -> list[Operation]:
    return list(fn.body.block.ops)


def run_traced(
    fn: func.FuncOp,
    args: Sequence[torch.Tensor],
    params: Mapping[str, torch.Tensor],
    hook: Hook | None = None,
    start: int = 0,
    cache: Mapping[SSAValue, torch.Tensor] | None = None,
    ops: list[Operation] | None = None,
) -> tuple[list[torch.Tensor], dict[SSAValue, torch.Tensor]]:
    """(outputs, every SSA value) of `fn`; see the module docstring for `hook`, `start`, `cache`."""
    ops = ops if ops is not None else body_ops(fn)
    env: dict[SSAValue, torch.Tensor] = dict(cache) if cache is not None else {}
    env.update(zip(fn.body.block.args, args))
    if start and cache is None:
        raise ValueError("run_traced: start > 0 needs the cache of a full run")
    with torch.no_grad():
        for index in range(start, len(ops)):
            op = ops[index]
            if isinstance(op, func.ReturnOp):
                return [env[v] for v in op.operands], env
            if isinstance(op, ParamOp):
                env[op.result] = params[op.opt("name")]
                continue
            if not isinstance(op, KilnOp):
                raise TypeError(f"op {index} ({op.name}) is not a kiln op; only kiln ops can be run")
            values = [env[v] for v in op.operands]
            if hook is not None:
                values = hook(index, op, values)
            out = op.reference(*values)
            for result, value in zip(op.results, out if isinstance(out, tuple) else (out,)):
                env[result] = value
    raise ValueError(f"@{fn.sym_name.data} has no func.return")
