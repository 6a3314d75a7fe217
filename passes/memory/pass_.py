"""`map-memory`: where each intermediate lives in one arena, and in which memory tier.

Reads the fused program (`group` attributes from `fuse`; without them every op is a step),
takes lifetimes in execution order (`lifetimes.py`), optionally picks a lower-peak order
(`reorder.py`), places every buffer at an offset in one arena (`offsets_ilp.py`, best-fit
as baseline, warm start and fallback) and, with `tiers=fpga|gpu`, chooses a memory tier
per buffer and weight (`tiers.py`).

Decisions on the IR: each op whose results need a buffer gets
`memory = {offset = array<i64: BYTES or -1 per result>, tier = "..."}` (offset -1: the
result is returned, or stays inside its fused group), a parameter or constant gets
`memory = {tier = "..."}` under `tiers`. The function's ops are put in the planned order,
each step contiguous, so every runtime runs what was planned. The module gets `kiln.memory`:
arena bytes of the chosen plan, of the ILP, of best-fit and the max-live lower bound, the
bytes with no reuse at all, solver status, objective, bound, gap and seconds; `reorder` adds
the real peak of program order, the greedy order and the order ILP's, which one was chosen,
and the order ILP's status, objective, bound, gap and seconds (on its model); `tiers` adds the tier plan's modeled cost against the baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    f64,
    i64,
)
from xdsl.passes import ModulePass

from ir.program import entry_function
from passes.memory.fpga_arrays import hls_arrays, table_bram
from passes.memory.lifetimes import ALIGN, Lifetimes, execution_steps, lifetimes
from passes.memory.offsets_ilp import OffsetPlan, plan_offsets
from passes.memory.reorder import Reorder, apply_order, better_order
from passes.memory.sizes import FPGA_DEFAULT_BITS, stored_bytes
from passes.memory.tiers import Item, TierError, TierPlan, check_part, plan_tiers, tiers_for
from passes.registry import register_pass

SOLVERS = ("ilp", "best-fit")
TIER_KINDS = ("none", "fpga", "gpu")


class MemoryOptionError(ValueError):
    pass


@register_pass
@dataclass(frozen=True)
class MapMemoryPass(ModulePass):
    name: ClassVar[str] = "map-memory"

    solver: str = "ilp"
    time_limit: float = 5.0
    reorder: bool = False
    tiers: str = "none"
    part: str = ""
    budget: float = 0.0  # GPU device bytes for weights plus the arena; 0: the whole device

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise MemoryOptionError(
                f"map-memory: unknown solver {self.solver!r}; use one of {', '.join(SOLVERS)}"
            )
        if self.time_limit <= 0:
            raise MemoryOptionError(
                f"map-memory: time-limit must be > 0 seconds, got {self.time_limit}"
            )
        if self.tiers not in TIER_KINDS:
            raise MemoryOptionError(
                f"map-memory: unknown tiers {self.tiers!r}; use one of {', '.join(TIER_KINDS)}"
            )
        if self.budget < 0:
            raise MemoryOptionError(f"map-memory: budget must be >= 0 bytes, got {self.budget}")
        check_part(self.tiers, self.part)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        summary = map_memory(op, self)
        op.attributes["kiln.memory"] = DictionaryAttr({k: _attr(v) for k, v in summary.items()})


def map_memory(module: ModuleOp, options: MapMemoryPass) -> dict[str, float | int | str]:
    """Plan, write the decisions on the IR, and return the summary."""
    start = time.perf_counter()
    fn = entry_function(module)
    steps = execution_steps(fn)
    summary: dict[str, float | int | str] = {"solver": options.solver}
    if options.reorder:
        choice = better_order(fn, steps, options.time_limit)
        steps = choice.steps
        summary.update(_describe_reorder(choice))
    apply_order(fn, steps)
    life = lifetimes(fn, steps)
    plan = plan_offsets(life.buffers, options.solver, options.time_limit)
    summary.update(_describe(life, plan))
    tier_of: dict[object, str] = {}
    if options.tiers != "none":
        tier_plan, tier_of = _tiers(fn, life, plan, options)
        summary.update(_describe_tiers(tier_plan, options))
    _write(life, plan, tier_of)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _describe_reorder(choice: Reorder) -> dict[str, float | int | str]:
    ilp = choice.ilp
    out: dict[str, float | int | str] = {
        "reorder_chosen": choice.chosen,
        "reorder_peak_before_bytes": choice.peaks["program"] * ALIGN,
        "reorder_peak_greedy_bytes": choice.peaks["greedy"] * ALIGN,
        "reorder_peak_ilp_bytes": choice.peaks["ilp"] * ALIGN,
        "reorder_peak_after_bytes": choice.peaks[choice.chosen] * ALIGN,
    }
    if ilp is not None:  # the ILP's own numbers are on its model (no in-place writes)
        out.update(reorder_status=ilp.status, reorder_objective_bytes=ilp.peak * ALIGN,
                   reorder_bound_bytes=ilp.bound * ALIGN, reorder_gap=ilp.gap,
                   reorder_seconds=ilp.seconds, reorder_variables=ilp.variables)
    return out


def _describe(life: Lifetimes, plan: OffsetPlan) -> dict[str, float | int | str]:
    ilp = plan.status not in ("fallback", "best-fit")
    out: dict[str, float | int | str] = {
        "status": plan.status,
        "chosen": "ilp" if ilp else "best-fit",
        "buffers": len(life.buffers),
        "steps": life.num_steps,
        "internal_values": life.internal_values,
        "in_place": len(life.aliases),
        "arena_bytes": plan.arena * ALIGN,
        "best_fit_bytes": plan.best_fit * ALIGN,
        "lower_bound_bytes": plan.lower_bound * ALIGN,
        "no_reuse_bytes": sum(b.size for b in life.buffers) * ALIGN,
        "returned_bytes": life.returned_bytes,
        "objective_bytes": plan.arena * ALIGN,
        "bound_bytes": plan.bound * ALIGN,
        "gap": plan.gap,
        "solve_seconds": plan.seconds,
        "pairs": plan.pairs,
        "variables": plan.variables,
    }
    if ilp:
        out["ilp_bytes"] = plan.arena * ALIGN
    if plan.note:
        out["note"] = plan.note
    return out


def _tiers(
    fn: func.FuncOp, life: Lifetimes, plan: OffsetPlan, options: MapMemoryPass
) -> tuple[TierPlan, dict[object, str]]:
    arena_bytes = plan.arena * ALIGN
    tiers = tiers_for(options.tiers, options.part, options.budget, arena_bytes)
    last = max(life.num_steps - 1, 0)
    items: list[Item] = []
    values: list[object] = []
    reserved = {}
    if options.tiers == "fpga":
        # The lookup tables hls-reuse counts take BRAM too: the arrays get what is left.
        reserved = {"bram": table_bram(fn, options.part)}
        tiers = [replace(t, capacity=max(0, t.capacity - reserved["bram"])) if t.name == "bram" else t for t in tiers]
        # The arrays the HLS design stores, each for the whole call (`fpga_arrays.py`).
        for array in hls_arrays(fn):
            items.append(Item(array.name, array.nbytes, array.traffic, 0, last, array.movable, array.banks))
            values.append(array.value)
    else:  # on the GPU the arena is on the device: only weights move
        for value, nbytes, reads in life.weights:
            if nbytes == 0:
                continue
            stored = stored_bytes(value, options.tiers, is_weight=True)  # packed codes if quantized
            items.append(Item(_value_name(value), stored, stored * reads, 0, last))
            values.append(value)
    tier_plan = plan_tiers(items, tiers, life.num_steps, options.solver, options.time_limit)
    tier_plan.reserved = reserved
    return tier_plan, dict(zip(values, tier_plan.choice))


def _describe_tiers(plan: TierPlan, options: MapMemoryPass) -> dict[str, float | int | str]:
    out: dict[str, float | int | str] = {
        "tiers": options.tiers,
        "tiers_part": options.part or ("a100" if options.tiers == "gpu" else "default"),
        "tiers_status": plan.status,
        "tiers_objective_us": plan.objective_us,
        "tiers_greedy_us": plan.greedy_us,
        "tiers_slowest_us": plan.slowest_us,
        "tiers_bound_us": plan.bound_us,
        "tiers_gap": plan.gap,
        "tiers_seconds": plan.seconds,
        "tiers_bytes": ("ap_fixed element widths (quant decisions, else "
                        f"{FPGA_DEFAULT_BITS} bits)" if options.tiers == "fpga"
                        else "dtype bytes, packed codes for quantized weights"),
    }
    for name, blocks in plan.reserved.items():
        out[f"tier_{name}_reserved_tables"] = blocks
    for name, used in plan.use.items():
        out[f"tier_{name}_used"] = used
        if plan.capacity[name] != float("inf"):
            out[f"tier_{name}_capacity"] = plan.capacity[name]
    return out


def _write(life: Lifetimes, plan: OffsetPlan, tier_of: dict[object, str]) -> None:
    offset_of = {v: plan.offsets[b.index] * ALIGN for b, v in zip(life.buffers, life.values)}
    offset_of.update({v: plan.offsets[i] * ALIGN for v, i in life.aliases.items()})  # in place
    for ops in life.steps:
        for op in ops:
            entry = {}
            if any(r in offset_of for r in op.results):
                entry["offset"] = DenseArrayBase.from_list(i64, [offset_of.get(r, -1) for r in op.results])
            tiers = [tier_of[r] for r in op.results if r in tier_of]
            if tiers:  # also on values with no arena offset (an HLS array need not be an arena buffer)
                entry["tier"] = StringAttr(tiers[0])
            if not entry:
                op.attributes.pop("memory", None)
                continue
            op.attributes["memory"] = DictionaryAttr(entry)
    for value, tier in tier_of.items():
        owner = value.owner  # type: ignore[attr-defined]
        if owner.name in ("kiln.param", "kiln.constant"):
            owner.attributes["memory"] = DictionaryAttr({"tier": StringAttr(tier)})


def _value_name(value) -> str:
    owner = value.owner
    name = owner.properties.get("name") if hasattr(owner, "properties") else None
    return name.data if isinstance(name, StringAttr) else owner.name


def _attr(v: float | int | str):
    if isinstance(v, str):
        return StringAttr(v)
    if isinstance(v, int):
        return IntegerAttr(v, i64)
    return FloatAttr(float(v), f64)


__all__ = ["MapMemoryPass", "MemoryOptionError", "TierError", "map_memory"]
