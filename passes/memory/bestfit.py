"""The baseline planner: greedy by size with best fit (TFLite's arena planner), and a checker.

Buffers are placed largest first; each goes into the smallest gap, among the buffers already
placed that are live at the same time, that holds it, or on top of them when no gap does.
It is fast (n log n plus the overlaps) and often optimal; the ILP (`offsets_ilp.py`) is
measured against it and starts from its answer.
"""

from __future__ import annotations

from passes.memory.lifetimes import Buffer


class PlanError(ValueError):
    """A plan that puts two buffers live at the same time in overlapping bytes."""


def best_fit(buffers: list[Buffer]) -> list[int]:
    """Offsets (ALIGN units) indexed by `Buffer.index`."""
    offsets = [0] * len(buffers)
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.start, b.index)):
        spans = sorted((offsets[p.index], offsets[p.index] + p.size) for p in placed if p.overlaps(b))
        best, best_gap, top = None, None, 0
        for lo, hi in spans:
            gap = lo - top
            if gap >= b.size and (best_gap is None or gap < best_gap):
                best, best_gap = top, gap
            top = max(top, hi)
        offsets[b.index] = best if best is not None else top
        placed.append(b)
    return offsets


def arena_size(buffers: list[Buffer], offsets: list[int]) -> int:
    return max((offsets[b.index] + b.size for b in buffers), default=0)


def check_plan(buffers: list[Buffer], offsets: list[int]) -> None:
    """Raise `PlanError` naming the first two buffers live together whose bytes overlap."""
    order = sorted(buffers, key=lambda b: (b.start, b.end))
    active: list[Buffer] = []
    for b in order:
        if offsets[b.index] < 0:
            raise PlanError(f"buffer {b.index} ({b.name}) has a negative offset {offsets[b.index]}")
        active = [a for a in active if a.end >= b.start]
        for a in active:
            lo, hi = offsets[a.index], offsets[a.index] + a.size
            if offsets[b.index] < hi and lo < offsets[b.index] + b.size:
                raise PlanError(
                    f"buffers {a.index} ({a.name}, steps {a.start}-{a.end}) and {b.index} "
                    f"({b.name}, steps {b.start}-{b.end}) overlap in the arena"
                )
        active.append(b)
