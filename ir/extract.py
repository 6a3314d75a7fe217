"""Cut a set of ops out of a function into a Program of its own.

Used to measure one fused group as a kernel (roofline validation, autotuning): the
group's external inputs become function arguments (parameters stay parameters, constants
are copied), and its values used outside become the results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from ir.ops.sources import ConstantOp, ParamOp
from ir.program import ENTRY, Program


def extract(ops: Sequence[Operation], params: dict[str, torch.Tensor]) -> Program:
    """A Program computing `ops` (in the given order) from their external inputs."""
    members = set(ops)
    block = Block()
    mapping: dict[SSAValue, SSAValue] = {}
    used: dict[str, torch.Tensor] = {}
    for op in ops:
        for operand in op.operands:
            if operand in mapping:
                continue
            owner = operand.owner
            if isinstance(owner, Operation) and owner in members:
                continue
            if isinstance(owner, (ParamOp, ConstantOp)):
                copy = owner.clone()
                block.add_op(copy)
                mapping[operand] = copy.results[0]
                if isinstance(owner, ParamOp):
                    used[owner.opt("name")] = params[owner.opt("name")]
            else:
                mapping[operand] = block.insert_arg(operand.type, len(block.args))
        block.add_op(op.clone(value_mapper=mapping))
    outputs = [
        r for op in ops for r in op.results
        if not r.uses or any(u.operation not in members for u in r.uses)
    ]
    results = [mapping[r] for r in outputs]
    block.add_op(func.ReturnOp(*results))
    fn = func.FuncOp(ENTRY, ([a.type for a in block.args], [r.type for r in results]), Region(block))
    return Program(ModuleOp([fn]), used)
