"""The expert-placement decision: experts by devices per layer, with the routed load.

The placement is read back from the routers (`kiln.expert_devices`, the attribute the
runtime reads) and the load from the routing trace named in the pipeline
(`place-experts{trace=FILE}`) when the file is still there: a cell is the tokens an
expert receives on a device (split evenly over its replicas), so hot experts and a
device's total load are visible next to the baselines' costs.
"""

from __future__ import annotations

import re
from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, fmt, register, solver_card

COST_FIELDS = ("cross_tokens", "dispatch_tokens", "return_tokens", "max_mean_load", "objective")


@register("experts")
def experts(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-experts", "Decision: expert placement (experts to devices)",
                  solver_card(s, "objective", "bound", ("seconds",),
                              ("devices", "capacity", "replicate", "layers", "experts", "top_k", "trace_tokens",
                               "trace_source", "extra_replicas", "ilp_variables", "ilp_rows")),
                  str(s.get("status", "")) or None)
    names = sorted({k.removesuffix("_objective") for k in s if k.endswith("_objective") and k != "objective"})
    rows = [[f"{s.get('chosen', s.get('solver'))} (chosen)"] + [fmt(s.get(f)) for f in COST_FIELDS]]
    rows += [[n] + [fmt(s.get(f"{n}_{f}")) for f in COST_FIELDS] for n in names]
    sec.tables.append(Table("Chosen placement against the baselines (modeled on the routing trace)",
                            ["placement", "tokens crossing devices", "dispatched", "returned", "max/mean device load",
                             "objective"], rows, 0))
    grid = placement_grid(ctx, s)
    if isinstance(grid, str):
        sec.notes.append(grid)
    else:
        sec.figures.append(figures.heatmap(*grid, f"fig-experts-{ctx.partition}"))
    return sec


def placement_grid(ctx: Context, s: dict[str, Any]):
    """(z, x labels, y labels, title) of experts x (layer, device), or why there is none."""
    if ctx.graph is None or ctx.partition not in ctx.graph.modules:
        return "no optimized IR in the report: the placement heat map needs it"
    from passes.experts import read_placement

    devices = int(s.get("devices", 0))
    try:
        placement = read_placement(ctx.graph.modules[ctx.partition], devices)
    except Exception as err:  # routers without a readable placement: keep the page
        return f"placement unavailable: {type(err).__name__}: {err}"
    loads, what = _loads(ctx.report.get("pipeline") or "", len(placement.replicas)), "tokens routed"
    if loads is None:
        what = "expert placed (1) - the trace file is gone, so no load"
    z, ylab = [], []
    for l, row in enumerate(placement.replicas):
        for d in range(devices):
            ylab.append(f"layer {l} / device {d}")
            z.append([((loads[l][e] if loads is not None else 1.0) / len(reps)) if d in reps else 0.0
                      for e, reps in enumerate(row)])
    xlab = [f"expert {e}" for e in range(len(placement.replicas[0]) if placement.replicas else 0)]
    return z, xlab, ylab, f"Experts by device, per layer ({what})"


def _loads(pipeline: str, layers: int) -> list[list[float]] | None:
    """Tokens routed to each (layer, expert) in the trace the pipeline named."""
    m = re.search(r"place-experts\{[^}]*trace=\"?([^\" }]+)", pipeline)
    if m is None:
        return None
    try:
        import numpy as np

        from passes.experts.trace import load_trace

        trace = load_trace(m.group(1))
    except Exception:  # the trace may have been moved since the compile
        return None
    counts = np.zeros((trace.layers, trace.experts))
    for call in trace.calls:
        for l in range(min(layers, trace.layers)):
            counts[l] += np.bincount(np.asarray(call[l]).ravel(), minlength=trace.experts)
    return counts.tolist()
