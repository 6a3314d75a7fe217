"""The parallelism decisions: sharding over a device mesh, and pipeline stages.

`shard` (Alpa-style intra-op ILP): the chosen plan against the replicate, data-parallel
and Megatron baselines solved by the same program, and each op's placement as the pass
wrote it (`kiln.placement`). `pipeline` (Alpa's inter-op DP): the stage cuts and each
stage's modeled time against the equal split.
"""

from __future__ import annotations

from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, fmt, register, solver_card

SHARD_BASELINES = ("replicate", "data-parallel", "megatron")


@register("shard")
def shard(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-shard", f"Decision: sharding over mesh {s.get('mesh', '?')}",
                  solver_card(s, "objective_us", "bound_us", ("solve_seconds", "seconds"),
                              ("mesh", "cluster", "ops", "classes", "strategies", "variables", "memory_budget_mb",
                               "best_baseline", "fallback")),
                  str(s.get("status", "")) or None)
    rows = [[f"{s.get('solver', 'ilp')} (chosen)", fmt(s.get("time_us")), fmt(s.get("comm_mb")),
             fmt(s.get("memory_mb")), "-", fmt(s.get("status"))]]
    for name in SHARD_BASELINES:
        if f"{name}_time_us" in s or f"{name}_status" in s:
            rows.append([name, fmt(s.get(f"{name}_time_us")), fmt(s.get(f"{name}_comm_mb")),
                         fmt(s.get(f"{name}_memory_mb")), fmt(bool(s.get(f"{name}_fits", 0))),
                         fmt(s.get(f"{name}_status", "solved"))])
    sec.tables.append(Table("Chosen plan against the baselines (same cost model)",
                            ["plan", "modeled step (us)", "communication (MB)", "memory per device (MB)",
                             "fits", "status"], rows, 0))
    timed = [r for r in rows if r[1] != "-"]
    if timed:
        sec.figures.append(figures.bars([r[0] for r in rows],
                                        {"modeled step (us)": [s.get("time_us")] + [s.get(f"{n}_time_us")
                                                                                  for n in SHARD_BASELINES
                                                                                  if f"{n}_time_us" in s or f"{n}_status" in s]},
                                        "Modeled step time of each plan", "us", f"fig-shard-{ctx.partition}"))
    if ctx.graph is not None:
        placed = [n for n in ctx.graph.nodes if n.partition == ctx.partition and "placement" in n.decisions]
        if placed:
            sec.tables.append(Table("Placement per op", ["op", "shape", "placement", "operand placements",
                                                         "all-reduce axes"],
                                    [[n.op, n.shape, n.decisions.get("placement"), n.decisions.get("operand placements", ""),
                                      n.decisions.get("all-reduce axes", "")] for n in placed]))
    if s.get("collectives"):
        sec.notes.append(f"collectives of the chosen plan: {s['collectives']}")
    return sec


@register("pipeline")
def pipeline(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-pipeline", f"Decision: pipeline stages ({s.get('stages', '?')} stages)",
                  solver_card(s, "objective_us", None, ("seconds",),
                              ("stages", "microbatches", "devices_per_stage", "cluster", "layers", "cuts")),
                  str(s.get("status", "")) or None)
    sec.tables.append(Table("Chosen cuts against the equal split", ["plan", "cuts", "modeled step (us)"],
                            [["dynamic program (chosen)", s.get("cuts", ""), fmt(s.get("objective_us"))],
                             ["equal split", s.get("equal_split_cuts", ""), fmt(s.get("equal_split_us"))]], 0))
    stage_us = [float(t) for t in str(s.get("stage_us", "")).split(",") if t.strip()]
    if stage_us:
        sec.figures.append(figures.bars([f"stage {i}" for i in range(len(stage_us))], {"modeled time (us)": stage_us},
                                        "Modeled time per stage (the slowest sets the pipeline's rate)", "us",
                                        f"fig-pipeline-{ctx.partition}"))
    return sec
