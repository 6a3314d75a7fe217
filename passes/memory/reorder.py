"""`reorder=true`: choose an execution order of the fused steps that lowers the peak.

OLLA optimizes lifetimes and offsets jointly; here the order is chosen first, then the
offset ILP runs on the lifetimes it gives. The order search is a list scheduler: among
the steps whose inputs are ready, run the one that frees the most memory net of what it
allocates (ties: program order). Its peak (max-live) is compared with program order's and
the lower one is kept, so reordering never makes the lower bound worse. Any topological
order computes the same values, so results do not change; the function's ops are then
moved into that order, one contiguous run per step, so every runtime executes it.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.ir import Operation

from ir.steps import step_deps
from passes.memory.lifetimes import lifetimes


def better_order(fn: func.FuncOp, steps: list[list[Operation]]) -> tuple[list[list[Operation]], int, int]:
    """(order, its max-live, program order's max-live), both in ALIGN units."""
    base = lifetimes(fn, steps)
    base_peak = base.max_live()
    step_of = {op: t for t, ops in enumerate(steps) for op in ops}
    deps = step_deps(steps)
    produced = [0] * len(steps)
    consumers: dict[int, set[int]] = {}  # buffer -> steps still to read it
    reads: list[list[int]] = [[] for _ in steps]
    for b, value in zip(base.buffers, base.values):
        produced[b.start] += b.size
        users = {step_of[u.operation] for u in value.uses if u.operation in step_of} - {b.start}
        consumers[b.index] = users
        for u in users:
            reads[u].append(b.index)
    size = {b.index: b.size for b in base.buffers}

    def net(t: int) -> int:
        freed = sum(size[i] for i in reads[t] if consumers[i] == {t})
        return produced[t] - freed

    users_of: list[set[int]] = [set() for _ in steps]
    for t, ds in enumerate(deps):
        for d in ds:
            users_of[d].add(t)
    waiting = [len(ds) for ds in deps]
    ready = [t for t in range(len(steps)) if not waiting[t]]
    order: list[int] = []
    while ready:
        t = min(ready, key=lambda s: (net(s), s))
        ready.remove(t)
        order.append(t)
        for i in reads[t]:
            consumers[i] = consumers[i] - {t}
        for u in users_of[t]:
            waiting[u] -= 1
            if not waiting[u]:
                ready.append(u)
    if len(order) != len(steps):
        raise ValueError("map-memory: steps form a cycle; groups must be convex")
    candidate = [steps[t] for t in order]
    peak = lifetimes(fn, candidate).max_live()
    return (candidate, peak, base_peak) if peak < base_peak else (steps, base_peak, base_peak)


def apply_order(fn: func.FuncOp, steps: list[list[Operation]]) -> None:
    """Move the compute ops into `steps`' order (sources stay first, the return last)."""
    block = fn.body.block
    ret = block.last_op
    assert ret is not None
    moved = {op for ops in steps for op in ops}
    for op in list(block.ops):
        if op in moved:
            op.detach()
    for ops in steps:
        for op in ops:
            block.insert_op_before(op, ret)
