"""`reorder=true`: choose an execution order of the fused steps that lowers the peak.

OLLA optimizes lifetimes and offsets jointly; here the order is chosen first (exactly, by
the ILP in `order_ilp.py`), then the offset ILP runs on the lifetimes it gives. The order
problem is read off the IR: one buffer per value that needs one (views folded into the
buffer they view, returned and group-internal values left out, as `lifetimes.py` does),
made by its step and read by the steps that read it or a view of it. The model leaves
out in-place writes (whether an input dies at a step depends on the order), so its peak
is an upper bound of the real one; every candidate order (program order, the greedy list
scheduler, the ILP's) is therefore measured with the real lifetimes, and the lowest real
peak wins (ties keep program order, then the greedy one), so reordering never makes the
peak worse. Any topological order computes the same values, so results do not change; the
function's ops are then moved into that order, one contiguous run per step, so every
runtime executes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.ir import Operation

from ir.steps import step_deps
from passes.memory.lifetimes import VIEW_OPS, lifetimes
from passes.memory.order_ilp import OrderProblem, OrderResult, greedy_order, ilp_order


@dataclass
class Reorder:
    steps: list[list[Operation]]  # the chosen order
    chosen: str  # program | greedy | ilp
    peaks: dict[str, int] = field(default_factory=dict)  # real max-live per candidate (ALIGN units)
    ilp: OrderResult | None = None


def order_problem(fn: func.FuncOp, steps: list[list[Operation]]) -> OrderProblem:
    life = lifetimes(fn, steps, in_place=False)
    step_of = {op: t for t, ops in enumerate(steps) for op in ops}
    view_steps = {t for t, ops in enumerate(steps) if len(ops) == 1 and ops[0].name in VIEW_OPS}

    def readers(value, producer: int) -> set[int]:
        out: set[int] = set()
        for use in value.uses:
            t = step_of.get(use.operation)
            if t is None or t == producer:
                continue
            out.add(t)
            if t in view_steps:  # the view's readers keep the viewed buffer alive
                out |= readers(use.operation.results[0], t)
        return out

    buffers = []
    for b, value in zip(life.buffers, life.values):
        buffers.append((b.start, frozenset(readers(value, b.start)), b.size))
    deps = [frozenset(d) for d in step_deps(steps)]
    return OrderProblem(len(steps), deps, buffers)


def better_order(fn: func.FuncOp, steps: list[list[Operation]], time_limit: float = 10.0) -> Reorder:
    """Program order, the greedy order and the ILP's, each measured; the lowest peak wins."""
    problem = order_problem(fn, steps)
    greedy = greedy_order(problem)
    exact = ilp_order(problem, time_limit, starts=[greedy])
    candidates = {"program": list(range(len(steps))), "greedy": greedy, "ilp": exact.order}
    peaks = {name: lifetimes(fn, [steps[t] for t in order]).max_live() for name, order in candidates.items()}
    chosen = min(candidates, key=lambda name: peaks[name])  # dict order breaks ties: program first
    return Reorder([steps[t] for t in candidates[chosen]], chosen, peaks, exact)


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
