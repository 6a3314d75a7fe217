"""Run a program from one preallocated arena at the offsets `map-memory` chose.

The interpreter's reference ops allocate their results; here every result with a planned
offset is copied into its view of one byte tensor allocated once per kernel, and later ops
read it from there. So the arena plan is exercised for real: if two buffers live at the
same time overlapped, outputs would differ from running without the arena (the tests check
they are identical). Values the plan leaves out (returned, or inside a fused group) stay
ordinary tensors; a returned value that is a view into the arena (a reshape of a buffer) is
cloned at once, since the arena is reused by later steps and by the next call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr
from xdsl.ir import SSAValue

from ir import dtypes
from ir.interpreter import InterpreterError
from ir.ops.sources import ParamOp


def arena_bytes(module) -> int | None:
    """The arena size `map-memory` chose, or None when the pass did not run."""
    summary = module.attributes.get("kiln.memory")
    if not isinstance(summary, DictionaryAttr):
        return None
    size = summary.data.get("arena_bytes")
    return int(size.value.data) if isinstance(size, IntegerAttr) else None


def planned_offsets(op) -> tuple[int, ...]:
    """Byte offset per result (-1: not in the arena)."""
    entry = op.attributes.get("memory")
    if not isinstance(entry, DictionaryAttr) or "offset" not in entry.data:
        return ()
    return tuple(int(v) for v in entry.data["offset"].get_values())


def arena_view(arena: torch.Tensor, offset: int, value: SSAValue) -> torch.Tensor:
    nbytes = dtypes.nbytes(value.type)
    shape = tuple(dtypes.shape_of(value.type))
    return arena[offset : offset + nbytes].view(dtypes.dtype_of(value.type)).view(shape)


class ArenaInterpreter:
    """`run_function` with planned results materialized in one arena."""

    def __init__(self, fn: func.FuncOp, size: int) -> None:
        self.fn = fn
        self.arena = torch.empty(max(size, 1), dtype=torch.uint8)
        self.returned = set(fn.body.block.last_op.operands)
        self.views: dict[SSAValue, torch.Tensor] = {}
        for op in fn.body.block.ops:
            for r, offset in zip(op.results, planned_offsets(op)):
                if offset >= 0:
                    self.views[r] = arena_view(self.arena, offset, r)

    def __call__(self, args: Sequence[torch.Tensor], params: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        block = self.fn.body.block
        env: dict[SSAValue, torch.Tensor] = dict(zip(block.args, args))
        base = self.arena.untyped_storage().data_ptr()
        for index, op in enumerate(block.ops):
            if isinstance(op, func.ReturnOp):
                return [env[v] for v in op.operands]
            if isinstance(op, ParamOp):
                env[op.result] = params[op.opt("name")]
                continue
            try:
                out = op.reference(*[env[v] for v in op.operands])
            except Exception as err:
                raise InterpreterError(f"{op.name} (op {index}) failed: {err}") from err
            for result, value in zip(op.results, out if isinstance(out, tuple) else (out,)):
                view = self.views.get(result)
                if view is not None:
                    value = view.copy_(value)
                elif result in self.returned and value.untyped_storage().data_ptr() == base:
                    value = value.clone()
                env[result] = value
        raise InterpreterError(f"@{self.fn.sym_name.data} has no func.return")
