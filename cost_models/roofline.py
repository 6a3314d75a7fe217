"""Roofline cost of one op and of one fused group.

time = max(flops / peak, bytes moved to and from main memory / bandwidth) + launch overhead

A fused group moves only its external inputs (values produced outside it, parameters,
arguments) and its external outputs (values used outside it or returned); everything in
between stays in registers or cache. That difference is what fusion buys, and what the
fusion pass minimizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from cost_models.hardware import Hardware
from ir import dtypes

FREE_OPS = ("kiln.param", "kiln.constant")


@dataclass(frozen=True)
class GroupCost:
    flops: int
    bytes_moved: int
    seconds: float


def group_cost(ops: Iterable[Operation], hw: Hardware) -> GroupCost:
    """Cost of running `ops` as one kernel."""
    members = set(ops)
    flops = sum(op.flops() for op in members)  # type: ignore[attr-defined]
    read: set[SSAValue] = set()
    written = 0
    for op in members:
        for operand in op.operands:
            owner = operand.owner
            if not (isinstance(owner, Operation) and owner in members):
                read.add(operand)
        for result in op.results:
            if any(_escapes(use.operation, members) for use in result.uses):
                written += dtypes.nbytes(result.type)
    read_bytes = sum(_read_bytes(v, members) for v in read)
    moved = read_bytes + written
    return GroupCost(flops, moved, roofline_seconds(flops, moved, hw))


def op_cost(op: Operation, hw: Hardware) -> GroupCost:
    return group_cost([op], hw)


def _escapes(user: Operation, members: set[Operation]) -> bool:
    return user not in members or isinstance(user, func.ReturnOp)


def _read_bytes(value: SSAValue, members: set[Operation]) -> int:
    """Bytes read of an external value; an embedding reads only the rows it gathers."""
    readers = [u.operation for u in value.uses if u.operation in members]
    if readers and all(r.name == "kiln.embedding" and r.operands[0] is value for r in readers):
        return sum(dtypes.nbytes(r.results[0].type) for r in readers)
    return dtypes.nbytes(value.type)


def roofline_seconds(flops: int, bytes_moved: int, hw: Hardware) -> float:
    """The roofline formula alone, for callers that count flops and bytes themselves."""
    return max(flops / hw.flops(), bytes_moved / hw.mem_bandwidth) + hw.launch_overhead_s
