"""Decide a placement: check the inputs, solve, replicate, compare with every baseline, report.

The chosen placement is never worse than any baseline on the modeled objective: every
candidate is replayed on the same trace by `cost.evaluate`, and a baseline that beats the
solver's answer (possible after a time-out, or for the layer-wise form, which fixes earlier
layers) is taken instead, and the summary says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from passes.experts import baselines as base
from passes.experts.cost import Cost, Placement, evaluate
from passes.experts.ilp import IlpResult, load_caps, solve_joint, solve_layerwise
from passes.experts.multistart import SearchResult, search
from passes.experts.replicas_ilp import replicate_ilp
from passes.experts.trace import ExpertsError, ExpertTrace

SOLVERS = ("ilp", "joint", "greedy", "contiguous", "round-robin")
# layer: each layer's busiest device at most contiguous's in that layer; total: the sum over
# layers of the busiest loads (the expert compute's critical path, and exactly the report's
# max/mean numerator) at most contiguous's sum, so balance can move between layers.
LOAD_CAPS = ("layer", "total")


@dataclass
class Decision:
    placement: Placement
    cost: Cost
    summary: dict[str, Any]


def check_options(experts: int, devices: int, capacity: int | None, replicate: int) -> int:
    """Returns the per-device expert capacity; one-line errors for impossible requests."""
    if devices < 1:
        raise ExpertsError(f"place-experts: devices must be >= 1, got {devices}")
    if devices > experts:
        raise ExpertsError(f"place-experts: {devices} devices but only {experts} experts per layer; "
                           f"use at most {experts} devices")
    if replicate < 0:
        raise ExpertsError(f"place-experts: replicate must be >= 0, got {replicate}")
    need = -(-experts // devices)
    cap = capacity if capacity is not None and capacity > 0 else -(-(experts + replicate) // devices)
    if cap < need:
        raise ExpertsError(f"place-experts: capacity {cap} too small: {experts} experts on {devices} devices "
                           f"need at least {need} slots per device")
    return cap


def decide(trace: ExpertTrace, devices: int, capacity: int | None = None, replicate: int = 0,
           solver: str = "ilp", time_limit: float = 10.0, load_cap: str = "layer",
           multistart: bool = True) -> Decision:
    if solver not in SOLVERS:
        raise ExpertsError(f"place-experts: unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if load_cap not in LOAD_CAPS:
        raise ExpertsError(f"place-experts: unknown load-cap {load_cap!r}; use one of {', '.join(LOAD_CAPS)}")
    began = time.perf_counter()
    if trace.tokens == 0:
        raise ExpertsError("place-experts: empty trace (no tokens)")
    cap = check_options(trace.experts, devices, capacity, replicate)
    bases = base.baselines(trace, devices, cap)
    costs = {name: evaluate(trace, p) for name, p in bases.items()}
    caps = load_caps(trace, devices)
    # Warm start: the better of greedy and contiguous that respects the per-layer load cap.
    greedy_ok = (costs["greedy"].loads.max(axis=1) <= caps + 1e-9).all()
    warm_name = "greedy" if greedy_ok and costs["greedy"].objective < costs["contiguous"].objective else "contiguous"
    result: IlpResult | None = None
    found: SearchResult | None = None
    total = float(caps.sum()) if load_cap == "total" else None
    if solver == "ilp":
        result = solve_layerwise(trace, devices, cap, time_limit, bases[warm_name])
        if multistart:  # the rest of the time limit widens the search (`multistart.py`)
            found = search(trace, result.placement.primary(), {k: p.primary() for k, p in bases.items()},
                           devices, cap, caps, began + time_limit, total)
            if found.start != "ilp" or found.accepted:
                result.placement = Placement.from_assignment(found.assign, devices)
    elif solver == "joint":
        warm = solve_layerwise(trace, devices, cap, time_limit / 4, bases[warm_name]).placement
        result = solve_joint(trace, devices, cap, time_limit * 3 / 4, warm)
    chosen_name = solver.replace("-", "_") if result is None else solver
    placement = result.placement if result else bases[chosen_name]
    cost = evaluate(trace, placement)
    note = ""
    if result is not None:
        best_base = min(costs, key=lambda n: (costs[n].objective, n))
        if costs[best_base].objective < cost.objective:
            note = f"{best_base} beat the {solver} answer on the modeled objective; {best_base} kept"
            chosen_name, placement, cost = best_base, bases[best_base], costs[best_base]
        if result.layers_fallback:
            note = (note + "; " if note else "") + (
                f"no incumbent in {len(result.layers_fallback)} layer(s): {warm_name} kept there")
    rep_info: dict[str, Any] = {"replicas_by": "none", "replicas_status": "not-run"}
    if replicate > 0:
        # Copies chosen by the per-layer ILP and by EPLB-style greedy; the replay picks.
        # load-cap=total: a layer may already sit above contiguous's busiest; its copies may not add more.
        layer_caps = caps if total is None else np.maximum(caps, cost.loads.max(axis=1))
        by_ilp = replicate_ilp(trace, placement, replicate, cap, layer_caps, max(1.0, time_limit / 4))
        tried = {"ilp": by_ilp.placement, "greedy": base.replicate(trace, placement, replicate, cap)}
        rcosts = {k: evaluate(trace, p) for k, p in tried.items()}
        for k in ("ilp", "greedy"):
            rep_info[f"replicas_{k}_objective"] = round(rcosts[k].objective, 3)
        rep_info["replicas_status"] = ",".join(sorted(set(by_ilp.statuses)))
        by = min(rcosts, key=lambda k: (rcosts[k].objective, k))
        if rcosts[by].objective < cost.objective:
            placement, cost, chosen_name = tried[by], rcosts[by], chosen_name + "+replicas"
            rep_info["replicas_by"] = by
    summary: dict[str, Any] = {
        "devices": devices, "capacity": cap, "replicate": replicate, "solver": solver,
        "chosen": chosen_name, "layers": trace.layers, "experts": trace.experts, "top_k": trace.top_k,
        "trace_tokens": trace.tokens, "trace_source": trace.source,
        "status": result.status if result else "heuristic",
        "objective": round(cost.objective, 3),
        "bound": round(result.bound, 3) if result and result.bound is not None else -1.0,
        "gap": round(result.gap, 6) if result and result.gap is not None else -1.0,
        # The layer-wise form bounds each layer given the layers before it (its gap is the
        # worst layer's); only the joint form's bound and gap are global.
        "bound_kind": {"ilp": "layer-wise (first sweep, earlier layers fixed)", "joint": "global"}.get(solver, "none"),
        "seconds": round(result.seconds, 3) if result else 0.0,
        "polish_steps": result.polish_steps if result else 0,
        "ilp_variables": result.variables if result else 0, "ilp_rows": result.rows if result else 0,
        "cross_tokens": cost.cross, "dispatch_tokens": cost.dispatched, "return_tokens": cost.returned,
        "max_mean_load": round(cost.max_mean, 4), "extra_replicas": placement.extra_replicas(),
        "note": note, **rep_info, "load_cap": load_cap,
        "multistart_winner": found.start if found else "not-run",
        "multistart_rounds": found.rounds_done if found else 0,
        "multistart_accepted": found.accepted if found else 0,
        "multistart_seconds": round(found.seconds, 3) if found else 0.0,
    }
    for name, c in costs.items():
        summary.update(c.as_dict(name))
    return Decision(placement, cost, summary)


def placement_text(placement: Placement, layer: int) -> str:
    """`"0,0,1,1|2"`-style: device(s) of each expert, replicas joined by '|'."""
    return ",".join("|".join(map(str, reps)) for reps in placement.replicas[layer])


def parse_placement_text(rows: list[str], devices: int) -> Placement:
    reps = tuple(tuple(tuple(int(d) for d in cell.split("|")) for cell in row.split(",")) for row in rows)
    return Placement(devices, reps)
