"""Execution steps: ops grouped into kernels (fusion groups), and the order they run in.

The TVM backend runs steps in this order, and `map-memory` plans buffer lifetimes for
exactly that order (an arena offset is only valid if the planner and the runtime agree
on which buffers are live together), so both ask here rather than each keeping a copy.
The Triton backend and the memory reorderer use the dependency sets too.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.ir import Operation


class StepCycleError(ValueError):
    """Steps that depend on each other both ways: a fusion group that is not convex."""


def step_deps(steps: Sequence[Sequence[Operation]]) -> list[set[int]]:
    """For each step, the indices of the other steps whose results it reads."""
    owner = {op: k for k, ops in enumerate(steps) for op in ops}
    deps: list[set[int]] = [set() for _ in steps]
    for k, ops in enumerate(steps):
        for op in ops:
            for operand in op.operands:
                producer = operand.owner
                if isinstance(producer, Operation) and owner.get(producer, k) != k:
                    deps[k].add(owner[producer])
    return deps


def run_order(steps: Sequence[Sequence[Operation]]) -> list[int]:
    """Producers first; among ready steps the earliest in the given (program) order."""
    deps = step_deps(steps)
    order: list[int] = []
    done: set[int] = set()
    pending = list(range(len(steps)))
    while pending:
        ready = next((k for k in pending if deps[k] <= done), None)
        if ready is None:
            raise StepCycleError("fusion groups form a cycle; the fuse pass must produce convex groups")
        pending.remove(ready)
        done.add(ready)
        order.append(ready)
    return order
