"""A value's placement on a device mesh, and the collectives that turn one placement into another.

A placement has one entry per mesh axis: `-1` (replicate along that axis) or a tensor dim
the axis splits (`shard(d)`). Several axes may split the same dim (data parallel over a
whole 2x4 mesh); the chunk a device holds is then indexed outer axis first. Partial sums
never live on a value: a contraction split along its reduced dim all-reduces inside its
own strategy (`strategies.py`), so every value here is a plain, reconstructible shard.

`reshard_steps` is the single description of a redistribution: the cost model prices its
steps and the runtime executes exactly those steps, so the collectives a plan predicts
and the ones a rank issues are the same list by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cost_models import comm

Placement = tuple[int, ...]


def text(p: Placement) -> str:
    """`(0, -1)` -> `[shard(0), replicate]` (the form printed on the IR)."""
    return "[" + ", ".join("replicate" if d < 0 else f"shard({d})" for d in p) + "]"


def parse(s: str) -> Placement:
    items = [i.strip() for i in s.strip().strip("[]").split(",") if i.strip()]
    return tuple(-1 if i == "replicate" else int(i[len("shard("):-1]) for i in items)


def replicated(mesh: tuple[int, ...]) -> Placement:
    return (-1,) * len(mesh)


def factors(p: Placement, mesh: tuple[int, ...], rank: int) -> list[int]:
    """How many pieces each tensor dim is cut into."""
    out = [1] * rank
    for axis, d in enumerate(p):
        if d >= 0:
            out[d] *= mesh[axis]
    return out


def fits(p: Placement, shape: tuple[int, ...], mesh: tuple[int, ...]) -> bool:
    if any(d >= len(shape) for d in p):
        return False
    return all(s % f == 0 for s, f in zip(shape, factors(p, mesh, len(shape))))


def local_shape(p: Placement, shape: tuple[int, ...], mesh: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s // f for s, f in zip(shape, factors(p, mesh, len(shape))))


def shards(p: Placement, mesh: tuple[int, ...]) -> int:
    return math.prod(mesh[a] for a, d in enumerate(p) if d >= 0)


def all_placements(shape: tuple[int, ...], mesh: tuple[int, ...]) -> list[Placement]:
    """Every placement whose shards divide `shape` (size-1 dims are never split)."""
    out: list[Placement] = [()]
    for _ in mesh:
        out = [p + (d,) for p in out for d in range(-1, len(shape))]
    return [p for p in out if fits(p, shape, mesh) and all(d < 0 or shape[d] > 1 for d in p)]


@dataclass(frozen=True)
class Step:
    """One step of a redistribution. `bytes_in` is the local tensor before the step."""

    kind: str  # "all_gather" | "all_to_all" | "slice"
    axis: int
    dim: int  # gather / slice dim; for all_to_all the dim that becomes whole
    dim2: int = -1  # all_to_all: the dim that becomes split
    bytes_in: float = 0.0


def reshard_steps(src: Placement, dst: Placement, shape: tuple[int, ...], mesh: tuple[int, ...],
                  nbytes: float) -> list[Step]:
    """Collectives (and free local slices) that take a value from `src` to `dst`.

    One swap of a split dim on one axis is an all_to_all; anything else gathers every axis
    that splits a changed dim (innermost first, so chunks concatenate in order) and then
    slices locally (outermost first). Exact, if not always the fewest bytes.
    """
    if src == dst:
        return []
    steps: list[Step] = []
    local = nbytes / shards(src, mesh)
    rank = len(shape)
    cur = list(src)
    axes_of = lambda pl, d: [a for a, x in enumerate(pl) if x == d]
    handled: set[int] = set()
    for a in range(len(mesh)):
        d, d2 = src[a], dst[a]
        if d >= 0 and d2 >= 0 and d != d2 and axes_of(src, d) == [a] and not axes_of(dst, d) \
                and not axes_of(src, d2) and axes_of(dst, d2) == [a]:
            steps.append(Step("all_to_all", a, d, d2, local))
            cur[a] = d2
            handled |= {d, d2}
    changed = [d for d in range(rank) if d not in handled and axes_of(cur, d) != axes_of(dst, d)]
    for d in changed:
        for a in reversed(axes_of(cur, d)):
            steps.append(Step("all_gather", a, d, -1, local))
            local *= mesh[a]
            cur[a] = -1
    for d in changed:
        for a in axes_of(dst, d):
            steps.append(Step("slice", a, d, -1, local))
            local /= mesh[a]
            cur[a] = d
    assert tuple(cur) == dst, (src, dst, cur)
    return steps


def step_seconds(step: Step, mesh: tuple[int, ...], cluster: comm.Cluster) -> float:
    link = cluster.axis_link(mesh, step.axis)
    p = mesh[step.axis]
    if step.kind == "all_gather":
        return comm.all_gather(step.bytes_in * p, p, link)
    if step.kind == "all_to_all":
        return comm.all_to_all(step.bytes_in, p, link)
    return 0.0


def step_bytes(step: Step, mesh: tuple[int, ...]) -> float:
    p = mesh[step.axis]
    if step.kind == "all_gather":
        return comm.wire_bytes("all_gather", step.bytes_in * p, p)
    if step.kind == "all_to_all":
        return comm.wire_bytes("all_to_all", step.bytes_in, p)
    return 0.0


def reshard_cost(src: Placement, dst: Placement, shape: tuple[int, ...], mesh: tuple[int, ...],
                 nbytes: float, cluster: comm.Cluster) -> tuple[float, float]:
    """(seconds, bytes sent per device) of the redistribution."""
    steps = reshard_steps(src, dst, shape, mesh, nbytes)
    return (sum(step_seconds(s, mesh, cluster) for s in steps), sum(step_bytes(s, mesh) for s in steps))
