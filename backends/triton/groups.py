"""Fusion groups as the Triton backend reads them, and the rule that picks a template for each.

The `fuse` pass decides groups and writes them as a `group` attribute (i64) on every op;
this file only reads them: ops with the same id form one kernel, and groups run in a
topological order of their data dependencies. A program with no group attributes (no
fusion pass ran) gets one group per op.

Template selection (`template_for`), the contract with the fusion pass:

0. a packed `kiln.dequantize` read only as the weight of matmuls joins their groups
   (`dequant_fusion.py`): the fuse pass keeps it alone, the matmul decodes it in-kernel;
1. every op must be `supported` (see `SUPPORTED` and `supported`), otherwise the
   unsupported ops leave the group and run through their torch reference implementation
   (reported as fallback ops), and each connected, convex rest is tried as a group;
2. one attention op, with no matmul/linear and no reduction -> `attention`;
3. one matmul or linear, with no attention and no reduction -> `matmul`;
4. one or more reductions (reduce/softmax/log_softmax/layer_norm/rms_norm), no
   contraction -> `reduction`;
5. only elementwise and data-movement ops -> `pointwise`;
6. anything else (two contractions, a contraction with a reduction) -> split.

A template may still refuse a group whose shape it cannot express (see each template's
docstring); the group is then split into single ops, and the split is reported.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr
from xdsl.ir import Operation, SSAValue

from backends.base import BackendError
from backends.triton.dequant import unsupported_reason
from backends.triton.lowering import POINTWISE_OPS
from ir import dtypes
from ir.program import kiln_ops
from ir.steps import step_deps

SOURCE_OPS = frozenset({"kiln.param", "kiln.constant"})
REDUCTION_OPS = frozenset(
    {"kiln.reduce", "kiln.softmax", "kiln.log_softmax", "kiln.layer_norm", "kiln.rms_norm"}
)
MATMUL_OPS = frozenset({"kiln.matmul", "kiln.linear"})
ATTENTION_OPS = frozenset({"kiln.attention"})
SUPPORTED = POINTWISE_OPS | REDUCTION_OPS | MATMUL_OPS | ATTENTION_OPS
REDUCE_KINDS = frozenset({"sum", "mean", "max", "min"})
TEMPLATES = ("pointwise", "reduction", "matmul", "attention")


@dataclass
class Group:
    name: str  # "g3", or "g3_1" for the second op of a split group 3
    ops: list[Operation]
    inputs: list[SSAValue]  # read from outside the group, in first-use order
    outputs: list[SSAValue]  # results read outside the group or returned

    def defining(self) -> dict[SSAValue, Operation]:
        return {r: op for op in self.ops for r in op.results}


def group_id(op: Operation) -> int | None:
    attr = op.attributes.get("group")
    if attr is None:
        attr = op.properties.get("group")
    return attr.value.data if isinstance(attr, IntegerAttr) else None


def supported(op: Operation) -> bool:
    """Whether `op` can be part of a Triton kernel (else it runs via its reference)."""
    if op.name not in SUPPORTED or len(op.results) != 1:
        return False
    # Reductions and contractions are written for floating-point data (a mask may be bool).
    if op.name in ATTENTION_OPS:
        return all(dtypes.is_float(o.type) for o in op.operands[:3])
    if op.name in REDUCTION_OPS | MATMUL_OPS and not all(
        dtypes.is_float(o.type) for o in op.operands
    ):
        return False
    if op.name == "kiln.reduce":
        return op.opt("kind") in REDUCE_KINDS
    if op.name == "kiln.dequantize":
        return unsupported_reason(op) is None
    return True


def template_for(group: Group) -> str | None:
    """The kernel template for a group, or None when it must be split (rules in the docstring)."""
    if not all(supported(op) for op in group.ops):
        return None
    names = [op.name for op in group.ops]
    attention = sum(n in ATTENTION_OPS for n in names)
    matmul = sum(n in MATMUL_OPS for n in names)
    reduction = sum(n in REDUCTION_OPS for n in names)
    if attention + matmul > 1 or (attention + matmul and reduction):
        return None
    if attention:
        return "attention"
    if matmul:
        return "matmul"
    return "reduction" if reduction else "pointwise"


def read_groups(fn: func.FuncOp) -> list[Group]:
    """The groups of `fn` in a valid execution order."""
    ops = [op for op in kiln_ops(fn) if op.name not in SOURCE_OPS]
    position = {op: i for i, op in enumerate(ops)}
    by_id: dict[object, list[Operation]] = {}
    for op in ops:
        gid = group_id(op)
        by_id.setdefault(("g", gid) if gid is not None else ("op", position[op]), []).append(op)
    members = list(by_id.values())
    order = _topological(members, position)
    groups = []
    for k in order:
        gid = group_id(members[k][0])
        groups.append(
            make_group(
                f"g{gid if gid is not None else f'op{position[members[k][0]]}'}", members[k], fn
            )
        )
    return groups


def make_group(name: str, ops: list[Operation], fn: func.FuncOp) -> Group:
    inside = {r for op in ops for r in op.results}
    inputs: list[SSAValue] = []
    for op in ops:
        for v in op.operands:
            if v not in inside and v not in inputs:
                inputs.append(v)
    outputs = [r for r in inside if _used_outside(r, ops)]
    outputs.sort(key=lambda r: (ops.index(r.owner), r.index))  # type: ignore[arg-type]
    return Group(name, list(ops), inputs, outputs)


def split(group: Group, fn: func.FuncOp) -> list[Group]:
    """Smaller groups, in a valid order, for a group no template takes as a whole.

    Unsupported ops leave the group (they run through their reference) and the supported
    ops that stay connected form groups of their own, when that keeps each one convex
    (`conv2d -> batch_norm -> relu` keeps `batch_norm -> relu` as one pointwise kernel).
    Otherwise, or when every op is supported, each op becomes its own group.
    """
    if len(group.ops) == 1:
        return [group]
    bad = [op for op in group.ops if not supported(op)]
    parts = [[op] for op in group.ops]
    if bad and len(bad) < len(group.ops):
        parts = [[op] for op in bad] + _convex_components(group.ops, bad)
    position = {op: i for i, op in enumerate(group.ops)}
    order = _topological(parts, position)
    return [make_group(f"{group.name}_{k}", parts[j], fn) for k, j in enumerate(order)]


def _convex_components(ops: list[Operation], bad: list[Operation]) -> list[list[Operation]]:
    """Connected components of the ops not in `bad`; a component that a bad op both reads
    from and feeds is broken into single ops (it could not run before or after it)."""
    good = [op for op in ops if op not in bad]
    parent = {op: op for op in good}

    def find(op: Operation) -> Operation:
        while parent[op] is not op:
            op = parent[op]
        return op

    for op in good:
        for v in op.operands:
            if isinstance(v.owner, Operation) and v.owner in parent:
                parent[find(op)] = find(v.owner)
    comps: dict[Operation, list[Operation]] = {}
    for op in good:
        comps.setdefault(find(op), []).append(op)
    out: list[list[Operation]] = []
    for comp in comps.values():
        members = set(comp)
        if any(
            _reaches(members, u, ops, up=True) and _reaches(members, u, ops, up=False) for u in bad
        ):
            out.extend([op] for op in comp)
        else:
            out.append(comp)
    return out


def _reaches(members: set[Operation], start: Operation, ops: list[Operation], up: bool) -> bool:
    """Whether some op of `members` is upstream (or downstream) of `start` within `ops`."""
    inside, seen, frontier = set(ops), {start}, [start]
    while frontier:
        op = frontier.pop()
        if up:
            nexts = [v.owner for v in op.operands if isinstance(v.owner, Operation)]
        else:
            nexts = [use.operation for r in op.results for use in r.uses]
        for n in nexts:
            if n in inside and n not in seen:
                if n in members:
                    return True
                seen.add(n)
                frontier.append(n)
    return False


def _used_outside(value: SSAValue, ops: list[Operation]) -> bool:
    return any(use.operation not in ops for use in value.uses)


def _topological(members: list[list[Operation]], position: dict) -> list[int]:
    """Kahn's algorithm, earliest first op first; a cycle means the grouping is not convex."""
    deps = step_deps(members)
    users: list[set[int]] = [set() for _ in members]
    for k, ds in enumerate(deps):
        for d in ds:
            users[d].add(k)
    waiting = [len(ds) for ds in deps]
    ready = [
        (min(position[op] for op in members[k]), k) for k in range(len(members)) if not waiting[k]
    ]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            waiting[u] -= 1
            if not waiting[u]:
                heapq.heappush(ready, (min(position[op] for op in members[u]), u))
    if len(order) != len(members):
        stuck = sorted(
            {group_id(members[k][0]) for k in range(len(members)) if waiting[k]}, key=str
        )
        raise BackendError(
            f"triton: fusion groups {stuck} depend on each other in a cycle (a group is not convex); "
            "re-run the fuse pass or drop the group attributes"
        )
    return order
