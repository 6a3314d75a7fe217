"""CPU schedules for the TIR PrimFuncs that Relax legalization produces.

TVM's default pipeline compiles legalized PrimFuncs as written: one serial scalar loop nest
per block, 3-16x slower than eager torch here. DLight's CPU rules (``tvm.s_tir.dlight.cpu``)
cover only GEMV and some row reductions, and its reduction rule's forced unrolling measured
slower than no schedule once LLVM may reassociate (NOTES.md). So Kiln schedules every
non-contraction PrimFunc itself, by rule, first match wins:

- ``injective``: elementwise / broadcast / transpose / concat / slice chains. Inline every
  producer; partition the innermost loop where a concat or pad branch flips; vectorize it;
  fuse leading loops and parallelize them.
- ``rows``: chains of blocks sharing leading spatial axes with the output, with at least
  one row reduction (softmax, layer_norm, rms_norm). ``compute_at`` every block under the
  innermost shared axis so a row is produced and consumed while it sits in L1, and
  parallelize the shared axes. Row reductions are left to LLVM's loop vectorizer (the
  target sets ``fast-math-reassoc``, see ``target.py``).
- ``blocks``: everything else with normal-form blocks (single reductions, column sums,
  pooling, a TIR matmul): each root block on its own. A reduction whose write's innermost
  axis is also read innermost gets that axis moved below the reduction loops and vectorized.
- ``parallel``: last resort: parallelize the outermost spatial loop of each root block.

A rule that raises (any schedule primitive error) is discarded and the next rule runs on a
fresh schedule; a PrimFunc no rule handles is left as legalized, so scheduling never fails a
build. Parallel loops are emitted only for kernels of at least ``min_parallel_elems``
iterations: a fork/join on TVM's pool costs microseconds, more than a small kernel takes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.ir.prim.expr import IntImm, Max, Min
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.target import Target

from . import tir_access
from .target import vector_lanes

#: PrimFunc attribute naming the rule that scheduled it (read by tests and reports).
SCHEDULE_ATTR = "kiln.schedule_rule"

# Debug aid only: print why rules declined. Not configuration (see STYLE.md on env vars).
_DEBUG = os.environ.get("KILN_SCHEDULE_DEBUG") == "1"

Sch = s_tir.Schedule
BlockRV = s_tir.schedule.SBlockRV
LoopRV = s_tir.schedule.LoopRV


@dataclass(frozen=True)
class ScheduleOptions:
    """Knobs of the CPU rules; defaults are what measured best on this 2-core CPU."""

    num_threads: int = 2
    min_parallel_elems: int = 16384
    chunks_per_thread: int = 4


class _NotApplicable(Exception):
    """A rule does not apply to this PrimFunc; try the next one."""


# ---------------------------------------------------------------------------------------
# Helpers over a schedule.
# ---------------------------------------------------------------------------------------


def _const(value: object) -> int | None:
    """The integer value of a static extent, ``None`` for a symbolic one."""
    if isinstance(value, int):
        return value
    return int(value.value) if isinstance(value, IntImm) else None


def _extent(sch: Sch, loop: LoopRV) -> int | None:
    return _const(sch.get(loop).extent)


def _size(extents: list[int | None]) -> int:
    """Iteration count; a symbolic extent counts as large."""
    return math.prod(e if e is not None else 1 << 16 for e in extents)


def _dom(info: SBlockInfo) -> list[int | None]:
    return [_const(d) for d in info.dom()]


def _leading_spatial(info: SBlockInfo) -> int:
    kinds = info.dom_kind()
    return len(kinds) - len(kinds.lstrip("S"))


def _lanes(sch: Sch, block: BlockRV, target: Target) -> int:
    body = sch.get(block).body
    bits = int(body.buffer.dtype.bits) if isinstance(body, tirx.BufferStore) else 32
    return max(vector_lanes(target, bits), 2)


def _own_loops(sch: Sch, block: BlockRV, skip: int = 0) -> list[tuple[object, LoopRV]]:
    """(iter_var, loop) for each loop of ``block`` below its ``skip`` outermost ones.

    A loop is paired with the one block iterator whose binding uses it (``v2 = ax2 + ax2_1``
    uses the row loop ``ax2`` and the unit loop ``ax2_1``). Raises when a loop drives
    several iterators or none (a fused or split binding): rules then fall back.
    """
    loops = list(sch.get_loops(block))
    realize = sch.get(loops[-1]).body if loops else None
    if not isinstance(realize, s_tir.SBlockRealize):
        raise _NotApplicable("block is not directly under its innermost loop")
    bindings = list(zip(sch.get(block).iter_vars, realize.iter_values))
    pairs = []
    for lp in loops[skip:]:
        var = sch.get(lp).loop_var
        users = [iv for iv, value in bindings if tir_access.uses_var(value, var)]
        if len(users) != 1:
            raise _NotApplicable("a loop drives several block iterators")
        pairs.append((users[0], lp))
    return pairs


def _is_copy(sch: Sch, block: BlockRV) -> bool:
    """A block that copies or casts one element: free to recompute in its consumers."""
    body = sch.get(block).body
    if not isinstance(body, tirx.BufferStore):
        return False
    value = body.value.value if isinstance(body.value, tvm.ir.prim.expr.Cast) else body.value
    return isinstance(value, tvm.ir.TensorLoad)


def _inline(sch: Sch, infos: list[SBlockInfo]) -> list[SBlockInfo]:
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
            points = _size([_extent(sch, lp) for lp in sch.get_loops(consumers[0])])
            single = len(consumers) == 1 and points == _size(_dom(info))
            if not (single or _is_copy(sch, info.block_rv)):
                continue
            try:
                sch.compute_inline(info.block_rv)
            except Exception:  # noqa: BLE001 - not inlinable: keep the block
                continue
            infos.pop(i)
            changed = True
            break
    for i in range(len(infos) - 1, 0, -1):
        if infos[i].is_injective():
            try:
                sch.reverse_compute_inline(infos[i].block_rv)
            except Exception:  # noqa: BLE001 - not inlinable: keep the block
                continue
            infos.pop(i)
    return infos


def _vectorize(sch: Sch, loop: LoopRV, lanes: int) -> LoopRV | None:
    """Vectorize ``loop``; return the loop left outside the vector loop (or None).

    Split by ``lanes`` when that divides the loop, whole when it is at most ``lanes`` long.
    A long loop ``lanes`` does not divide is left to LLVM's vectorizer: a TIR split with a
    tail predicate does not vectorize.
    """
    ext = _extent(sch, loop)
    if ext is None or ext < 2 or not isinstance(sch.get(loop).body, s_tir.SBlockRealize):
        return loop  # only a loop directly around one block may become a vector loop
    if ext % lanes == 0 and ext > lanes:
        outer, vec = sch.split(loop, factors=[None, lanes])
        sch.vectorize(vec)
        return outer
    if ext <= lanes:
        sch.vectorize(loop)
        return None
    return loop


def _vectorize_partitioned(sch: Sch, block: BlockRV, lanes: int) -> list[LoopRV] | None:
    """Vectorize an innermost loop holding a branch (concat, pad), partitioned at its flips.

    The loop is split by ``lanes`` first and the outer part partitioned at the branch
    points, so each piece runs whole vectors on one side of the branch and TVM's simplifier
    removes the branch. Returns the loops outside the vectorized level, or None when the
    block has no such branch or its flips are not multiples of ``lanes``.
    """
    pairs = _own_loops(sch, block)
    iv, inner = pairs[-1]
    ext = _extent(sch, inner)
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


def _parallelize(sch: Sch, loops: list[LoopRV], work: int, options: ScheduleOptions) -> None:
    """Fuse the shortest loop prefix with enough iterations and make it parallel."""
    if not loops or options.num_threads < 2 or work < options.min_parallel_elems:
        return
    want = options.num_threads * options.chunks_per_thread
    take, ext = 0, 1
    for lp in loops:
        take += 1
        e = _extent(sch, lp)
        ext *= e if e is not None else want
        if ext >= want:
            break
    fused = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    sch.parallel(fused)


def _column_iter(sch: Sch, block: BlockRV) -> object | None:
    """The spatial iterator a reduction should run innermost, if any.

    That is the iterator of the write's innermost index when it also indexes the innermost
    dimension (stride 1) of an input that varies along the reduction: ``j`` in
    ``C[i, j] += A[i, k] * B[k, j]``, ``d`` in a sum over the sequence of ``x[b, s, d]``.
    Not ``w`` in a stride-2 pooling window: vector gathers lose to LLVM's scalar loop. A row value read alongside (``mean[i]`` in a variance)
    does not vary along the reduction and does not count.
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


def _schedule_reduction_inner(sch: Sch, block: BlockRV, lanes: int, skip: int = 0) -> None:
    """Order a reduction's own loops for vectorization (used under and outside rows).

    Column reductions move their output axis innermost and vectorize it. Row reductions
    fuse trailing reduction loops (e.g. a global average pool's H and W) into one long
    contiguous loop that LLVM vectorizes with reassociation, or unroll them when they are a
    small window (pooling).
    """
    pairs = _own_loops(sch, block, skip)
    column = _column_iter(sch, block)
    if column is not None and any(iv.same_as(column) for iv, _ in pairs):
        spatial = [lp for iv, lp in pairs if iv.iter_type == tirx.IterVar.DataPar]
        col_loop = next(lp for iv, lp in pairs if iv.same_as(column))
        others = [lp for lp in spatial if not lp.same_as(col_loop)]
        reduce_ = [lp for iv, lp in pairs if iv.iter_type != tirx.IterVar.DataPar]
        sch.reorder(*others, *reduce_, col_loop)
        _vectorize(sch, col_loop, lanes)
        # The init stays in the block as a branch on "first reduction step" per vector
        # (decompose_reduction would leave the update loop unvectorizable in 0.27). A small
        # window (pooling) is unrolled, which folds that branch away.
        if _size([_extent(sch, lp) for lp in reduce_]) <= 16:
            for lp in reduce_:
                sch.unroll(lp)
        return
    trailing = []
    for iv, lp in reversed(pairs):
        if iv.iter_type == tirx.IterVar.DataPar:
            break
        trailing.insert(0, lp)
    if trailing and _size([_extent(sch, lp) for lp in trailing]) <= 16:
        for lp in trailing:  # a pooling window: unrolled, no loop overhead per output
            sch.unroll(lp)
    elif len(trailing) > 1:
        sch.fuse(*trailing)


def _schedule_block(sch: Sch, info: SBlockInfo, target: Target, options: ScheduleOptions) -> None:
    """Schedule one root-level block on its own (rules ``injective`` and ``blocks``)."""
    block = info.block_rv
    lanes = _lanes(sch, block, target)
    work = _size(_dom(info))
    if info.is_injective():
        outer = _vectorize_partitioned(sch, block, lanes)
        if outer is None:
            loops = list(sch.get_loops(block))
            rest = _vectorize(sch, loops[-1], lanes)
            outer = loops[:-1] + ([rest] if rest is not None else [])
        _parallelize(sch, outer, work, options)
        return
    n_lead = _leading_spatial(info)
    if _column_iter(sch, block) is not None:
        n_lead -= 1  # that spatial loop moves innermost
    _schedule_reduction_inner(sch, block, lanes)
    _parallelize(sch, list(sch.get_loops(block))[:n_lead], work, options)


# ---------------------------------------------------------------------------------------
# Rules. Each gets a fresh schedule and raises (_NotApplicable or a TVM error) to decline.
# ---------------------------------------------------------------------------------------


def _rule_injective(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    infos = normalize_prim_func(sch)
    if not infos or not all(info.is_injective() for info in infos):
        raise _NotApplicable("not all blocks are injective")
    for info in _inline(sch, infos):
        _schedule_block(sch, info, target, options)


def _rule_rows(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    infos = normalize_prim_func(sch)
    if not infos or all(info.is_injective() for info in infos):
        raise _NotApplicable("no reduction")
    infos = _inline(sch, infos)
    if len(infos) < 2:
        raise _NotApplicable("a single block: rule blocks")
    n = min(_leading_spatial(info) for info in infos)
    last = infos[-1]
    lead = _dom(last)[:n]
    if not lead:
        raise _NotApplicable("blocks share no leading spatial axis")
    for info in infos:
        if _dom(info)[:n] != lead:
            raise _NotApplicable(f"block {info.name} {_dom(info)} does not start with {lead}")
        column = None if info.is_injective() else _column_iter(sch, info.block_rv)
        if column is not None and any(column.var.same_as(it.var) for it in info.iters[:n]):
            raise _NotApplicable(f"block {info.name} reduces across rows")
    rows = list(sch.get_loops(last.block_rv))[:n]
    for info in reversed(infos[:-1]):
        sch.compute_at(info.block_rv, rows[-1], preserve_unit_loops=True)
    blocks = [info.block_rv for info in infos]
    for block in list(blocks):
        partial = _rfactor_row_max(sch, block, _lanes(sch, block, target))
        if partial is not None:
            sch.compute_at(partial, rows[-1], preserve_unit_loops=True)
            blocks.append(partial)
    for block in blocks:
        lanes = _lanes(sch, block, target)
        if all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars):
            pairs = _own_loops(sch, block, skip=n)
            if pairs:
                _vectorize(sch, pairs[-1][1], lanes)
        else:
            _schedule_reduction_inner(sch, block, lanes, skip=n)
    work = max(_size(_dom(info)) for info in infos)
    _parallelize(sch, rows, work, options)


def _rfactor_row_max(sch: Sch, block: BlockRV, lanes: int) -> BlockRV | None:
    """Split a row max/min into ``lanes`` partial results (a vector) and a short final step.

    LLVM vectorizes a row *sum* once reassociation is allowed, but not a max or min
    (that needs no-NaN semantics, which an attention mask's ``-inf`` forbids assuming).
    The returned rfactor block is a column reduction, which vectorizes. Applied after
    ``compute_at``: TVM moves the new block to the root, and the caller moves it back.
    """
    stmt = sch.get(block)
    if all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
        return None
    body = stmt.body
    if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, Max | Min):
        return None
    if _column_iter(sch, block) is not None:
        return None
    inner = sch.get_loops(block)[-1]
    ext = _extent(sch, inner)
    if ext is None or ext % lanes or ext < 2 * lanes:
        return None
    _, lane = sch.split(inner, factors=[None, lanes])
    return sch.rfactor(lane, factor_axis=len(body.indices))


def _rule_blocks(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    infos = normalize_prim_func(sch)
    if not infos:
        raise _NotApplicable("not in normal form")
    for info in _inline(sch, infos):
        _schedule_block(sch, info, target, options)


def _rule_parallel(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    del target
    infos = normalize_prim_func(sch)
    if not infos:
        raise _NotApplicable("not in normal form")
    for info in infos:
        if info.dom_kind().startswith("S"):
            _parallelize(sch, [info.iters[0].loop_rv], _size(_dom(info)), options)


Rule = Callable[[Sch, Target, ScheduleOptions], None]

RULES: list[tuple[str, Rule]] = [
    ("injective", _rule_injective),
    ("rows", _rule_rows),
    ("blocks", _rule_blocks),
    ("parallel", _rule_parallel),
]


def schedule_prim_func(
    func: tirx.PrimFunc, target: Target, options: ScheduleOptions | None = None
) -> tuple[tirx.PrimFunc, str]:
    """Schedule ``func`` with the first rule that applies; return it and the rule's name.

    Never raises: when no rule applies the result is ``func`` itself, named ``"none"``.
    """
    options = options or ScheduleOptions()
    for name, rule in RULES:
        sch = s_tir.Schedule(func)
        try:
            rule(sch, target, options)
        except Exception as err:  # noqa: BLE001 - any failure means: try a simpler rule
            if _DEBUG:
                reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err)
                print(f"kiln schedule: {name} declined: {reason}")
            continue
        return sch.mod["main"].with_attr(SCHEDULE_ATTR, name), name
    return func.with_attr(SCHEDULE_ATTR, "none"), "none"


def schedule_module(
    mod: tvm.IRModule, target: Target, options: ScheduleOptions | None = None
) -> tvm.IRModule:
    """Schedule every PrimFunc of ``mod`` that no one scheduled before."""
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        attrs = func.attrs or {}
        if SCHEDULE_ATTR in attrs or attrs.get("tirx.is_scheduled", False):
            continue
        updates[gvar] = schedule_prim_func(func, target, options)[0]
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod
