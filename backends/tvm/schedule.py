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

Each rule reads its choices from ``ScheduleOptions`` (the tuner's knobs, ``knobs.py``): the
vector width, a square tile and loop order for injective blocks (and whether a column
reduction moves its output axis innermost), how many outer loops the parallel loop fuses,
and TVM's auto-unroll step on each root loop. The defaults are the choices made before
those knobs existed, and a knob that does not apply to a block leaves it as it is.

A rule that raises (any schedule primitive error) is discarded and the next rule runs on a
fresh schedule; a PrimFunc no rule handles is left as legalized, so scheduling never fails a
build. Parallel loops are emitted only for kernels of at least ``min_parallel_elems``
iterations: a fork/join on TVM's pool costs microseconds, more than a small kernel takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.target import Target

from .loop_steps import (
    NotApplicable,
    Sch,
    ScheduleOptions,
    annotate_unroll,
    block_domain,
    column_iter,
    inline_producers,
    iteration_count,
    lanes_for,
    order_reduction_loops,
    own_loops,
    parallelize,
    rfactor_row_max,
    tile_and_order,
    vectorize,
    vectorize_partitioned,
)

__all__ = ["RULES", "SCHEDULE_ATTR", "ScheduleOptions", "schedule_module", "schedule_prim_func"]

#: PrimFunc attribute naming the rule that scheduled it (read by tests and reports).
SCHEDULE_ATTR = "kiln.schedule_rule"

_log = logging.getLogger(__name__)


def _leading_spatial(info: SBlockInfo) -> int:
    kinds = info.dom_kind()
    return len(kinds) - len(kinds.lstrip("S"))


def _schedule_block(sch: Sch, info: SBlockInfo, target: Target, options: ScheduleOptions) -> None:
    """Schedule one root-level block on its own (rules ``injective`` and ``blocks``)."""
    block = info.block_rv
    lanes = lanes_for(sch, block, target, options)
    work = iteration_count(block_domain(info))
    if info.is_injective():
        outer = vectorize_partitioned(sch, block, lanes)
        if outer is None:
            loops = tile_and_order(sch, block, options)
            rest = vectorize(sch, loops[-1], lanes, tail=bool(options.vector_lanes))
            outer = loops[:-1] + ([rest] if rest is not None else [])
        parallelize(sch, outer, work, options)
        return
    n_lead = _leading_spatial(info)
    if not options.loop_order and column_iter(sch, block) is not None:
        n_lead -= 1  # that spatial loop moves innermost
    order_reduction_loops(sch, block, lanes, options=options)
    parallelize(sch, list(sch.get_loops(block))[:n_lead], work, options)


# ---------------------------------------------------------------------------------------
# Rules. Each gets a fresh schedule and raises (NotApplicable or a TVM error) to decline.
# ---------------------------------------------------------------------------------------


def _rule_injective(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    infos = normalize_prim_func(sch)
    if not infos or not all(info.is_injective() for info in infos):
        raise NotApplicable("not all blocks are injective")
    for info in inline_producers(sch, infos):
        _schedule_block(sch, info, target, options)


def _rule_rows(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    infos = normalize_prim_func(sch)
    if not infos or all(info.is_injective() for info in infos):
        raise NotApplicable("no reduction")
    infos = inline_producers(sch, infos)
    if len(infos) < 2:
        raise NotApplicable("a single block: rule blocks")
    n = min(_leading_spatial(info) for info in infos)
    last = infos[-1]
    lead = block_domain(last)[:n]
    if not lead:
        raise NotApplicable("blocks share no leading spatial axis")
    for info in infos:
        if block_domain(info)[:n] != lead:
            raise NotApplicable(
                f"block {info.name} {block_domain(info)} does not start with {lead}"
            )
        column = None if info.is_injective() else column_iter(sch, info.block_rv)
        if column is not None and any(column.var.same_as(it.var) for it in info.iters[:n]):
            raise NotApplicable(f"block {info.name} reduces across rows")
    rows = list(sch.get_loops(last.block_rv))[:n]
    for info in reversed(infos[:-1]):
        sch.compute_at(info.block_rv, rows[-1], preserve_unit_loops=True)
    blocks = [info.block_rv for info in infos]
    for block in list(blocks):
        partial = rfactor_row_max(sch, block, lanes_for(sch, block, target, options))
        if partial is not None:
            sch.compute_at(partial, rows[-1], preserve_unit_loops=True)
            blocks.append(partial)
    for block in blocks:
        lanes = lanes_for(sch, block, target, options)
        if all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars):
            pairs = own_loops(sch, block, skip=n)
            if pairs:
                vectorize(sch, pairs[-1][1], lanes, tail=bool(options.vector_lanes))
        else:
            order_reduction_loops(sch, block, lanes, skip=n, options=options)
    work = max(iteration_count(block_domain(info)) for info in infos)
    parallelize(sch, rows, work, options)


def _rule_blocks(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    infos = normalize_prim_func(sch)
    if not infos:
        raise NotApplicable("not in normal form")
    for info in inline_producers(sch, infos):
        _schedule_block(sch, info, target, options)


def _rule_parallel(sch: Sch, target: Target, options: ScheduleOptions) -> None:
    del target
    infos = normalize_prim_func(sch)
    if not infos:
        raise NotApplicable("not in normal form")
    for info in infos:
        if info.dom_kind().startswith("S"):
            work = iteration_count(block_domain(info))
            parallelize(sch, [info.iters[0].loop_rv], work, options)


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
            if options.auto_unroll:
                annotate_unroll(sch, options.auto_unroll)
        except Exception as err:  # noqa: BLE001 - any failure means: try a simpler rule
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            _log.debug(
                "rule %s declined %s: %s", name, (func.attrs or {}).get("global_symbol"), reason
            )
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
