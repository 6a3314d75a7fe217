"""Reference interpreter: runs a kiln function on torch tensors, op by op.

It is the semantics every backend is checked against and the fallback that can run
any verified module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from ir.core import KilnOp
from ir.ops.sources import ParamOp
from ir.program import Program, entry_function


class InterpreterError(RuntimeError):
    pass


def run_function(
    fn: func.FuncOp,
    args: Sequence[torch.Tensor],
    params: Mapping[str, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    block = fn.body.block
    if len(args) != len(block.args):
        raise InterpreterError(f"@{fn.sym_name.data} takes {len(block.args)} arguments, got {len(args)}")
    env: dict[SSAValue, torch.Tensor] = dict(zip(block.args, args))
    params = params or {}
    for index, op in enumerate(block.ops):
        if isinstance(op, func.ReturnOp):
            return [env[v] for v in op.operands]
        if isinstance(op, ParamOp):
            name = op.opt("name")
            if name not in params:
                raise InterpreterError(f"kiln.param @{name} (op {index}) has no value in the program's params")
            env[op.result] = params[name]
            continue
        if not isinstance(op, KilnOp):
            raise InterpreterError(f"op {index} ({op.name}) is not a kiln op; the interpreter runs kiln ops only")
        try:
            out = op.reference(*[env[v] for v in op.operands])
        except Exception as err:
            raise InterpreterError(f"{op.name} (op {index}) failed: {err}") from err
        outs = out if isinstance(out, tuple) else (out,)
        for result, value in zip(op.results, outs):
            env[result] = value
    raise InterpreterError(f"@{fn.sym_name.data} has no func.return")


def run(program: Program | ModuleOp, *args: torch.Tensor, params=None) -> list[torch.Tensor]:
    """Run the entry function of a program (or a bare module with explicit params)."""
    if isinstance(program, Program):
        return run_function(program.forward, args, program.params)
    return run_function(entry_function(program), args, params)
