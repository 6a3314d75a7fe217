"""The loop transformations Kiln's CPU schedule rules (``schedule.py``) are built from.

Each step works on a ``tvm.s_tir.Schedule`` in place and either succeeds, does nothing
(when it does not apply), or raises: a rule that raises is abandoned as a whole, so steps
need not undo partial work. The measurements behind each choice are in NOTES.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.ir.prim.expr import IntImm, Max, Min
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.target import Target

from . import tir_access
from .target import vector_lanes

Sch = s_tir.Schedule
BlockRV = s_tir.schedule.SBlockRV
LoopRV = s_tir.schedule.LoopRV


@dataclass(frozen=True)
class ScheduleOptions:
    """Knobs of the CPU rules; defaults are what measured best on this 2-core CPU."""

    num_threads: int = 2
    # Iterations below which a kernel stays serial: a fork/join on TVM's pool costs ~3 us
    # with a hot worker. The break-even depends on the work per iteration (~100k for a
    # plain add, ~10k for a GELU, NOTES.md); it is a tuning knob (knobs.py) per kernel.
    min_parallel_elems: int = 16384
    chunks_per_thread: int = 4
    # Lanes of a vector loop in 32-bit elements (a 16-bit type gets twice as many); 0: the
    # target's SIMD width, a loop it does not divide left to LLVM's vectorizer. An explicit
    # width that does not divide a long loop vectorizes whole vectors and leaves a scalar tail.
    vector_lanes: int = 0
    # Square tile of the two innermost non-unit loops of an injective block (a transpose
    # reads one of them strided); applied only where it divides both. 0: no tile.
    tile: int = 0
    # 1: swap the two innermost non-unit loops of an injective block (inside the tile), and
    # keep a column reduction's reduction loops innermost instead of its output axis.
    loop_order: int = 0
    # Outer loops fused into the parallel loop; 0: the fewest that give
    # num_threads * chunks_per_thread chunks.
    parallel_depth: int = 0
    # `pragma_auto_unroll_max_step` on each root loop: serial loop nests inside of at most
    # this many iterations are unrolled (TVM's UnrollLoop). 0: none.
    auto_unroll: int = 0


class NotApplicable(Exception):
    """A rule does not apply to this PrimFunc; try the next one."""


def const_int(value: object) -> int | None:
    """The integer value of a static extent, ``None`` for a symbolic one."""
    if isinstance(value, int):
        return value
    return int(value.value) if isinstance(value, IntImm) else None


def extent(sch: Sch, loop: LoopRV) -> int | None:
    return const_int(sch.get(loop).extent)


def iteration_count(extents: list[int | None]) -> int:
    """Iteration count; a symbolic extent counts as large."""
    return math.prod(e if e is not None else 1 << 16 for e in extents)


def lanes_for(sch: Sch, block: BlockRV, target: Target, options: ScheduleOptions | None = None) -> int:
    """Lanes of the block's vector loop: the target's SIMD width or the `vector_lanes` knob."""
    body = sch.get(block).body
    bits = int(body.buffer.dtype.bits) if isinstance(body, tirx.BufferStore) else 32
    if options is not None and options.vector_lanes:
        return max(options.vector_lanes * 32 // bits, 2)
    return max(vector_lanes(target, bits), 2)


def block_domain(info: SBlockInfo) -> list[int | None]:
    """The static extents of a normal-form block's iterators (``None`` when symbolic)."""
    return [const_int(d) for d in info.dom()]


def own_loops(sch: Sch, block: BlockRV, skip: int = 0) -> list[tuple[object, LoopRV]]:
    """(iter_var, loop) for each loop of ``block`` below its ``skip`` outermost ones.

    A loop is paired with the one block iterator whose binding uses it (``v2 = ax2 + ax2_1``
    uses the row loop ``ax2`` and the unit loop ``ax2_1``). Raises when a loop drives
    several iterators or none (a fused or split binding): rules then fall back.
    """
    loops = list(sch.get_loops(block))
    realize = sch.get(loops[-1]).body if loops else None
    if not isinstance(realize, s_tir.SBlockRealize):
        raise NotApplicable("block is not directly under its innermost loop")
    bindings = list(zip(sch.get(block).iter_vars, realize.iter_values))
    pairs = []
    for lp in loops[skip:]:
        var = sch.get(lp).loop_var
        users = [iv for iv, value in bindings if tir_access.uses_var(value, var)]
        if len(users) != 1:
            raise NotApplicable("a loop drives several block iterators")
        pairs.append((users[0], lp))
    return pairs


def is_copy(sch: Sch, block: BlockRV) -> bool:
    """A block that copies or casts one element: free to recompute in its consumers."""
    body = sch.get(block).body
    if not isinstance(body, tirx.BufferStore):
        return False
    value = body.value.value if isinstance(body.value, tvm.ir.prim.expr.Cast) else body.value
    return isinstance(value, tvm.ir.TensorLoad)


def inline_producers(sch: Sch, infos: list[SBlockInfo]) -> list[SBlockInfo]:
    """Inline injective producers where that recomputes nothing; fold epilogues back.

    A producer goes into its consumer when it has one consumer iterating over as many points
    (each value is still computed once) or when it is a copy/cast. Row values such as
    ``mean`` or ``rsqrt(var)`` stay materialized: inlined into a per-element consumer they
    would be recomputed per element.
    """
    changed = True
    while changed:
        changed = False
        for i, info in enumerate(infos):
            if not info.is_injective():
                continue
            consumers = sch.get_consumers(info.block_rv)
            if not consumers:
                continue
            points = iteration_count([extent(sch, lp) for lp in sch.get_loops(consumers[0])])
            single = len(consumers) == 1 and points == iteration_count(block_domain(info))
            if (single or is_copy(sch, info.block_rv)) and _applies(
                sch.compute_inline, info.block_rv
            ):
                infos.pop(i)
                changed = True
                break
    for i in range(len(infos) - 1, 0, -1):
        if infos[i].is_injective() and _applies(sch.reverse_compute_inline, infos[i].block_rv):
            infos.pop(i)
    return infos


def _applies(primitive: object, block: BlockRV) -> bool:
    """Run a schedule primitive that may legitimately refuse; report whether it applied."""
    try:
        primitive(block)
    except Exception:  # noqa: BLE001 - e.g. not inlinable: the block stays as it is
        return False
    return True


def vectorize(sch: Sch, loop: LoopRV, lanes: int, tail: bool = False) -> LoopRV | None:
    """Vectorize ``loop``; return the loop left outside the vector loop (or None).

    Split by ``lanes`` when that divides the loop, whole when it is at most ``lanes`` long.
    A long loop ``lanes`` does not divide is left to LLVM's vectorizer (a TIR split with a
    tail predicate does not vectorize), or with ``tail`` partitioned into whole vectors and
    a scalar remainder.
    """
    ext = extent(sch, loop)
    if ext is None or ext < 2 or not isinstance(sch.get(loop).body, s_tir.SBlockRealize):
        return loop  # only a loop directly around one block may become a vector loop
    if ext % lanes == 0 and ext > lanes:
        outer, vec = sch.split(loop, factors=[None, lanes])
        sch.vectorize(vec)
        return outer
    if ext <= lanes:
        sch.vectorize(loop)
        return None
    if tail:
        whole, _ = sch.loop_partition(loop, factors=[ext - ext % lanes, None])
        _, vec = sch.split(whole, factors=[None, lanes])
        sch.vectorize(vec)
        return None  # two sibling loops now: neither can join a fused parallel loop
    return loop


def vectorize_partitioned(sch: Sch, block: BlockRV, lanes: int) -> list[LoopRV] | None:
    """Vectorize an innermost loop holding a branch (concat, pad), partitioned at its flips.

    The loop is split by ``lanes`` first and the outer part partitioned at the branch
    points, so each piece runs whole vectors on one side of the branch and TVM's simplifier
    removes the branch. Returns the loops outside the vectorized level, or None when the
    block has no such branch or its flips are not multiples of ``lanes``.
    """
    pairs = own_loops(sch, block)
    iv, inner = pairs[-1]
    ext = extent(sch, inner)
    points = tir_access.split_points(sch.get(block), iv.var)
    bounds = [p for p in points if ext is not None and 0 < p < ext]
    if not bounds or ext % lanes or any(p % lanes for p in bounds):
        return None
    outer_loops = list(sch.get_loops(block))[:-1]
    outer, vec = sch.split(inner, factors=[None, lanes])
    sch.vectorize(vec)
    steps = [p // lanes for p in bounds]
    sizes = [b - a for a, b in zip([0, *steps], steps)]
    sch.loop_partition(outer, factors=[*sizes, None])
    return outer_loops


def tile_and_order(sch: Sch, block: BlockRV, options: ScheduleOptions) -> list[LoopRV]:
    """An injective block's loops after the ``tile`` and ``loop_order`` knobs.

    Both act on the two innermost loops longer than one iteration. A square tile splits
    each where ``tile`` divides it and is shorter (both, or the block is left as it is) and
    leaves one tile of both innermost; ``loop_order`` then exchanges the two inner loops
    (a transpose can read or write contiguously, not both).
    """
    loops = list(sch.get_loops(block))
    long = [lp for lp in loops if extent(sch, lp) != 1]
    if len(long) < 2:
        return loops
    a, b = long[-2:]
    ea, eb = extent(sch, a), extent(sch, b)
    tile = options.tile
    if tile and ea is not None and eb is not None and all(e % tile == 0 and e > tile for e in (ea, eb)):
        a_out, a = sch.split(a, factors=[None, tile])
        b_out, b = sch.split(b, factors=[None, tile])
        sch.reorder(a_out, b_out, a, b)
    if options.loop_order:
        sch.reorder(b, a)
    return list(sch.get_loops(block))


def annotate_unroll(sch: Sch, max_step: int) -> None:
    """Let TVM unroll serial loop nests of at most ``max_step`` iterations under each root loop."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        if loops:
            sch.annotate(loops[0], "pragma_auto_unroll_max_step", max_step)
            sch.annotate(loops[0], "pragma_unroll_explicit", 1)


def parallelize(sch: Sch, loops: list[LoopRV], work: int, options: ScheduleOptions) -> None:
    """Fuse a loop prefix and make it parallel: ``parallel_depth`` loops, or by default the
    shortest prefix with ``num_threads * chunks_per_thread`` iterations."""
    if not loops or options.num_threads < 2 or work < options.min_parallel_elems:
        return
    want = options.num_threads * options.chunks_per_thread
    take, ext = 0, 1
    for lp in loops:
        take += 1
        e = extent(sch, lp)
        ext *= e if e is not None else want
        if take == options.parallel_depth or (not options.parallel_depth and ext >= want):
            break
    fused = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    sch.parallel(fused)


def column_iter(sch: Sch, block: BlockRV) -> object | None:
    """The spatial iterator a reduction should run innermost, if any.

    That is the iterator of the write's innermost index when it also indexes the innermost
    dimension (stride 1) of an input that varies along the reduction: ``j`` in
    ``C[i, j] += A[i, k] * B[k, j]``, ``d`` in a sum over the sequence of ``x[b, s, d]``.
    Not ``w`` in a stride-2 pooling window: vector gathers lose to LLVM's scalar loop.
    A row value read alongside (``mean[i]`` in a variance) does not vary along the
    reduction and does not count.
    """
    stmt = sch.get(block)
    out_index = tir_access.output_innermost_index(stmt)
    if not isinstance(out_index, tirx.Var):
        return None
    reduce_vars = [iv.var for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    for iv in stmt.iter_vars:
        if iv.iter_type != tirx.IterVar.DataPar or not iv.var.same_as(out_index):
            continue
        for indices in tir_access.input_indices(stmt):
            along_reduction = any(tir_access.uses_var(i, r) for i in indices for r in reduce_vars)
            if along_reduction and tir_access.is_unit_stride(indices[-1], iv.var):
                return iv
    return None


def order_reduction_loops(
    sch: Sch, block: BlockRV, lanes: int, skip: int = 0, options: ScheduleOptions | None = None
) -> None:
    """Order a reduction's own loops for vectorization (used under and outside rows).

    Column reductions move their output axis innermost and vectorize it (unless the
    ``loop_order`` knob keeps the reduction innermost). Row reductions
    fuse trailing reduction loops (e.g. a global average pool's H and W) into one long
    contiguous loop that LLVM vectorizes with reassociation, or unroll them when they are a
    small window (pooling).
    """
    options = options or ScheduleOptions()
    pairs = own_loops(sch, block, skip)
    column = None if options.loop_order else column_iter(sch, block)
    if column is not None and any(iv.same_as(column) for iv, _ in pairs):
        spatial = [lp for iv, lp in pairs if iv.iter_type == tirx.IterVar.DataPar]
        col_loop = next(lp for iv, lp in pairs if iv.same_as(column))
        others = [lp for lp in spatial if not lp.same_as(col_loop)]
        reduce_ = [lp for iv, lp in pairs if iv.iter_type != tirx.IterVar.DataPar]
        sch.reorder(*others, *reduce_, col_loop)
        vectorize(sch, col_loop, lanes, tail=bool(options.vector_lanes))
        # The init stays in the block as a branch on "first reduction step" per vector
        # (decompose_reduction would leave the update loop unvectorizable in 0.27). A small
        # window (pooling) is unrolled, which folds that branch away.
        if iteration_count([extent(sch, lp) for lp in reduce_]) <= 16:
            for lp in reduce_:
                sch.unroll(lp)
        return
    trailing = []
    for iv, lp in reversed(pairs):
        if iv.iter_type == tirx.IterVar.DataPar:
            break
        trailing.insert(0, lp)
    if trailing and iteration_count([extent(sch, lp) for lp in trailing]) <= 16:
        for lp in trailing:  # a pooling window: unrolled, no loop overhead per output
            sch.unroll(lp)
    elif len(trailing) > 1:
        sch.fuse(*trailing)


def rfactor_row_max(sch: Sch, block: BlockRV, lanes: int) -> BlockRV | None:
    """Split a row max/min into ``lanes`` partial results (a vector) and a short final step.

    LLVM vectorizes a row *sum* once reassociation is allowed, but not a max or min: that
    needs its no-NaNs flag, which Kiln does not set (it would also fold ``isnan`` away).
    The returned rfactor block is a column reduction, which vectorizes. Applied after
    ``compute_at``: TVM moves the new block to the root, and the caller moves it back.
    """
    stmt = sch.get(block)
    if all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
        return None
    body = stmt.body
    if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, Max | Min):
        return None
    if column_iter(sch, block) is not None:
        return None
    inner = sch.get_loops(block)[-1]
    ext = extent(sch, inner)
    if ext is None or ext % lanes or ext < 2 * lanes:
        return None
    _, lane = sch.split(inner, factors=[None, lanes])
    return sch.rfactor(lane, factor_axis=len(body.indices))
