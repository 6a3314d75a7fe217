"""Sharding strategies of one op: which placements its operands and result take on the mesh.

An op is described by its iteration space: the output's dims plus, for a contraction, the
reduced dim K, each mapped to the operand dims it indexes (a table per op kind below).
A strategy picks, for each mesh axis, one iteration dim to split (or none); operands and
result follow from the maps. Splitting K leaves partial sums, all-reduced inside the
strategy along that axis (Alpa's "partial" strategies, resolved at once so that values
never hold partial sums). Ops without a table run replicated, which is always correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.ir import Operation

from cost_models import comm
from cost_models.hardware import Hardware
from cost_models.roofline import roofline_seconds
from ir import dtypes
from passes.shard.placement import Placement, all_placements, fits, local_shape

SOURCES = ("kiln.param", "kiln.constant")
ELEMENTWISE_EXTRA = ("kiln.where", "kiln.cast", "kiln.clamp")


@dataclass(frozen=True)
class Strategy:
    out: Placement
    ins: tuple[Placement, ...]
    reduce_axes: tuple[int, ...] = ()  # mesh axes all-reduced (K split there)
    divisor: int = 1  # devices the op's work is split over

    def label(self) -> str:
        from passes.shard.placement import text

        return text(self.out) + ("" if not self.reduce_axes else f" +all_reduce{list(self.reduce_axes)}")


@dataclass(frozen=True)
class IterSpace:
    sizes: tuple[int, ...]
    out_map: tuple[int | None, ...]  # iteration dim -> output dim (None: reduced)
    operand_maps: tuple[tuple[int | None, ...], ...]  # per operand: iteration dim -> operand dim
    shardable: tuple[bool, ...]


def _shape(v) -> tuple[int, ...]:
    return dtypes.shape_of(v.type)


def _broadcast_map(operand: tuple[int, ...], out: tuple[int, ...]) -> tuple[int | None, ...]:
    off = len(out) - len(operand)
    return tuple(j - off if j >= off and operand[j - off] == out[j] else None for j in range(len(out)))


def iteration_space(op: Operation) -> IterSpace | None:
    """The table: how each op kind's iteration dims index its operands. None: replicate only."""
    name = op.name
    if len(op.results) != 1:
        return None
    ins = [_shape(o) for o in op.operands]
    out = _shape(op.results[0]) if op.results else ()
    ident = tuple(range(len(out)))
    every = (True,) * len(out)
    trait_names = {type(t).__name__ for t in getattr(op, "traits", ())}
    if name == "kiln.linear":
        k = ins[1][1]
        sizes = (*out, k)
        x = (*range(len(out) - 1), None, len(out) - 1)
        w = (*[None] * (len(out) - 1), 0, 1)
        maps = [x, w] + ([(*[None] * (len(out) - 1), 0, None)] if len(ins) == 3 else [])
        return IterSpace(sizes, (*ident, None), tuple(maps), (True,) * len(sizes))
    if name == "kiln.matmul":
        a, b = ins
        k = a[-1]
        batch = len(out) - 2
        am = tuple(_broadcast_map(a[:-2], out[:-2])) + (len(a) - 2, None, len(a) - 1)
        bm = tuple(_broadcast_map(b[:-2], out[:-2])) + (None, len(b) - 1, len(b) - 2)
        return IterSpace((*out, k), (*ident, None), (am, bm), (True,) * (batch + 3))
    if name == "kiln.attention":
        causal = bool(op.opt("causal"))  # type: ignore[attr-defined]
        batch = len(out) - 2
        qm = _broadcast_map(ins[0][:-2], out[:-2]) + (len(ins[0]) - 2, None)
        kv = [_broadcast_map(s[:-2], out[:-2]) + (None, None) for s in ins[1:3]]
        maps = [qm, *kv]
        if len(ins) == 4:
            full = (*out[:-2], out[-2], ins[1][-2])
            mm = _broadcast_map(ins[3], full)
            maps.append(mm[:-1] + (None,))
        return IterSpace(out, ident, tuple(maps), (True,) * batch + (not causal, False))
    if name == "kiln.reduce":
        dims = {d % len(ins[0]) for d in op.opt("dims")}  # type: ignore[attr-defined]
        keep = bool(op.opt("keepdim"))  # type: ignore[attr-defined]
        kept = [i for i in range(len(ins[0])) if i not in dims]
        omap = tuple((i if keep else kept.index(i)) if i not in dims else None for i in range(len(ins[0])))
        return IterSpace(ins[0], omap, (tuple(range(len(ins[0]))),), tuple(i not in dims for i in range(len(ins[0]))))
    if name in ("kiln.softmax", "kiln.log_softmax"):
        d = op.opt("dim") % len(out)  # type: ignore[attr-defined]
        return IterSpace(out, ident, (ident,), tuple(i != d for i in ident))
    if name in ("kiln.layer_norm", "kiln.rms_norm"):
        n = int(op.opt("ndims"))  # type: ignore[attr-defined]
        none = (None,) * len(out)
        return IterSpace(out, ident, (ident, *[none] * (len(ins) - 1)), tuple(i < len(out) - n for i in ident))
    if name == "kiln.permute":
        dims = tuple(op.opt("dims"))  # type: ignore[attr-defined]
        return IterSpace(out, ident, (dims,), every)
    if name == "kiln.reshape":
        return _reshape_space(ins[0], out)
    if name == "kiln.slice":
        d = op.opt("dim") % len(out)  # type: ignore[attr-defined]
        return IterSpace(out, ident, (ident,), tuple(i != d for i in ident))
    if name == "kiln.concat":
        d = op.opt("dim") % len(out)  # type: ignore[attr-defined]
        return IterSpace(out, ident, tuple(ident for _ in ins), tuple(i != d for i in ident))
    if name == "kiln.embedding":
        idx = tuple(range(len(ins[1]))) + (None,)
        table = (None,) * len(ins[1]) + (1,)
        return IterSpace(out, ident, (table, idx), every)
    if "Elementwise" in trait_names or name in ELEMENTWISE_EXTRA:
        if len(op.results) != 1:
            return None
        return IterSpace(out, ident, tuple(_broadcast_map(s, out) for s in ins), every)
    return None


def _reshape_space(src: tuple[int, ...], dst: tuple[int, ...]) -> IterSpace:
    """Groups of dims with equal products; the first dim of each group carries its split."""
    omap: list[int | None] = [None] * len(dst)
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj, pi, pj = i, j, src[i], dst[j]
        while pi != pj:
            if pi < pj:
                i += 1
                pi *= src[i]
            else:
                j += 1
                pj *= dst[j]
        omap[gj] = gi
        i, j = i + 1, j + 1
    return IterSpace(dst, tuple(range(len(dst))), (tuple(omap),), tuple(m is not None for m in omap))


def enumerate_strategies(op: Operation, mesh: tuple[int, ...]) -> list[Strategy]:
    """Every strategy of `op` on `mesh` whose shards divide the shapes involved."""
    if op.name in SOURCES:
        return [Strategy(p, ()) for p in all_placements(_shape(op.results[0]), mesh)]
    rep = (-1,) * len(mesh)
    replicate = Strategy(rep, tuple(rep for _ in op.operands))
    space = iteration_space(op)
    if space is None:
        return [replicate]
    out_shape = _shape(op.results[0])
    in_shapes = [_shape(o) for o in op.operands]
    choices: list[tuple[int, ...]] = [()]
    for _ in mesh:
        choices = [c + (d,) for c in choices for d in range(-1, len(space.sizes))
                   if d < 0 or (space.shardable[d] and space.sizes[d] > 1)]
    found: dict[tuple, Strategy] = {}
    for c in choices:
        factor = [1] * len(space.sizes)
        for a, d in enumerate(c):
            if d >= 0:
                factor[d] *= mesh[a]
        if any(s % f for s, f in zip(space.sizes, factor)):
            continue
        out = tuple(-1 if d < 0 or space.out_map[d] is None else space.out_map[d] for d in c)
        ins = tuple(tuple(-1 if d < 0 or m[d] is None else m[d] for d in c) for m in space.operand_maps)
        if not fits(out, out_shape, mesh) or not all(fits(p, s, mesh) for p, s in zip(ins, in_shapes)):
            continue
        reduce_axes = tuple(a for a, d in enumerate(c) if d >= 0 and space.out_map[d] is None)
        divisor = math.prod(mesh[a] for a, d in enumerate(c) if d >= 0)
        s = Strategy(out, ins, reduce_axes, divisor)
        found.setdefault((out, ins, reduce_axes), s)
    return list(found.values()) or [replicate]


def compute_seconds(op: Operation, s: Strategy, mesh: tuple[int, ...], hw: Hardware) -> float:
    """Roofline time of the local shard (sources cost nothing: they are resident)."""
    if op.name in SOURCES:
        return 0.0
    moved = sum(_local_bytes(v, p, mesh) for v, p in zip(op.operands, s.ins))
    moved += sum(_local_bytes(r, s.out, mesh) for r in op.results)
    flops = op.flops() if hasattr(op, "flops") else 0  # type: ignore[attr-defined]
    return roofline_seconds(int(flops / s.divisor), int(moved), hw)


def reduce_cost(op: Operation, s: Strategy, mesh: tuple[int, ...], cluster: comm.Cluster) -> tuple[float, float]:
    """(seconds, bytes per device) of the all-reduces a K-split strategy issues, axis by axis."""
    seconds = sent = 0.0
    n = _local_bytes(op.results[0], s.out, mesh) if op.results else 0
    for a in s.reduce_axes:
        seconds += comm.all_reduce(n, mesh[a], cluster.axis_link(mesh, a))
        sent += comm.wire_bytes("all_reduce", n, mesh[a])
    return seconds, sent


def _local_bytes(v, p: Placement, mesh: tuple[int, ...]) -> float:
    shape = _shape(v)
    if not shape:
        return float(dtypes.nbytes(v.type))
    return float(math.prod(local_shape(p, shape, mesh)) * dtypes.itemsize(v.type))


def local_bytes(v, p: Placement, mesh: tuple[int, ...]) -> float:
    return _local_bytes(v, p, mesh)
