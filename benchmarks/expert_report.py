"""Expert-placement numbers: planned on calibration traces, measured on held-out ones.

`python -m benchmarks.expert_report [--quick]` writes benchmarks/results/experts.md and .json.
All numbers are modeled (counted by replaying routing through `passes/experts/cost.py`, the
same replay the gloo runtime is checked against in tests/compiler/distributed), plus solver
times; none needs a quiet machine. Sources:

- generated: `benchmarks/expert_traces.py` (Zipf popularity, Markov inter-layer affinity;
  parameters in each table's title), split by calls into calibration and held-out halves;
- recorded: the zoo `moe` and a tiny HF Mixtral (random weights), traced with
  `compiler/trace_experts.py` on drawn inputs (calibration seed 0, held-out seed 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.expert_traces import generate
from passes.experts import baselines as base
from passes.experts.bound import cross_lower_bound
from passes.experts.cost import evaluate
from passes.experts.decide import decide
from passes.experts.ilp import solve_joint, solve_layerwise
from passes.experts.trace import ExpertTrace

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("contiguous", "round_robin", "greedy", "ilp", "ilp+replicas", "ilp_total", "ilp_total+replicas")
# The placements the goal is judged on: per-layer load cap (default) and load-cap=total, each
# without and with replicas (replicas get one spare slot per device: more memory).
GOAL = ("ilp", "ilp+replicas", "ilp_total", "ilp_total+replicas")


def compare(cal: ExpertTrace, held: ExpertTrace, devices: int, time_limit: float, replicate: int) -> dict[str, Any]:
    """Held-out cross-device tokens and max/mean load of every placement planned on `cal`."""
    cap = -(-cal.experts // devices)  # the baselines' memory: no spare slot
    plans = dict(base.baselines(cal, devices, cap))
    ilp = decide(cal, devices, cap, 0, "ilp", time_limit)
    plans["ilp"] = ilp.placement
    # Replicas need spare slots: R more per layer, spread over the devices.
    spare = -(-(cal.experts + replicate) // devices)
    plans["ilp+replicas"] = decide(cal, devices, spare, replicate, "ilp", time_limit).placement
    total = decide(cal, devices, cap, 0, "ilp", time_limit, load_cap="total")
    plans["ilp_total"] = total.placement
    plans["ilp_total+replicas"] = decide(cal, devices, spare, replicate, "ilp", time_limit, load_cap="total").placement
    row: dict[str, Any] = {"devices": devices, "capacity": cap, "status": ilp.summary["status"],
                           "seconds": ilp.summary["seconds"], "chosen": ilp.summary["chosen"],
                           "multistart_winner": ilp.summary["multistart_winner"],
                           "total_multistart_winner": total.summary["multistart_winner"]}
    for name, p in plans.items():
        c = evaluate(held, p)
        row[name] = {"cross": c.cross, "max_mean": round(c.max_mean, 3), "objective": c.objective}
    row["reduction_vs_contiguous"] = round(1 - row["ilp"]["cross"] / row["contiguous"]["cross"], 3)
    # What no placement within the capacity (no spare slot, any load) can beat on the held-out trace.
    b = cross_lower_bound(held, devices, cap, 120.0)
    row["bound"] = {"cross": round(b.bound, 1), "status": b.status, "seconds": round(b.seconds, 2)}
    return row


def goal_met(r: dict[str, Any], name: str) -> bool:
    """>= 30% fewer held-out cross tokens than contiguous at a held-out max/mean no worse."""
    c = r["contiguous"]
    return r[name]["cross"] <= 0.7 * c["cross"] and r[name]["max_mean"] <= c["max_mean"]


def table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    head = ("| D | " + " | ".join(f"{c} cross (max/mean)" for c in COLUMNS)
            + " | vs contiguous: " + " / ".join(GOAL) + " | goal met: " + " / ".join(GOAL)
            + " | lower bound (any placement) | ILP status, s |")
    out = [f"### {title}", "", head, "|" + "---|" * (len(COLUMNS) + 5)]
    for r in rows:
        cells = " | ".join(f"{r[c]['cross']} ({r[c]['max_mean']:.2f})" if c in r else "-" for c in COLUMNS)
        base_cross = r["contiguous"]["cross"]
        vs = " / ".join(f"{100 * (r[g]['cross'] / base_cross - 1):+.1f}%" if g in r else "-" for g in GOAL)
        met = " / ".join(("yes" if goal_met(r, g) else "no") if g in r else "-" for g in GOAL)
        bound = (f"{r['bound']['cross']:.0f} ({100 * (r['bound']['cross'] / base_cross - 1):+.1f}%)"
                 if "bound" in r and r["bound"]["status"] == "optimal" else "-")
        out.append(f"| {r['devices']} | {cells} | {vs} | {met} | {bound} | {r['status']}, {r['seconds']:.1f} |")
    return out + [""]


def recorded(name: str, samples: int) -> tuple[ExpertTrace, ExpertTrace]:
    from benchmarks import expert_models
    from compiler.trace_experts import sample_inputs, trace_model

    model, inputs = getattr(expert_models, name)()
    return (trace_model(model, sample_inputs(inputs, samples, seed=0), name),
            trace_model(model, sample_inputs(inputs, samples, seed=1), name))


def scale(layers: int, experts: int, devices: int, limit: float, joint_limit: float) -> dict[str, Any]:
    trace = generate(layers=layers, experts=experts, tokens=512, calls=4, seed=5)
    cap = -(-experts // devices)
    warm = base.greedy(trace, devices, cap)
    lw = solve_layerwise(trace, devices, cap, limit, base.contiguous(layers, experts, devices))
    t = time.perf_counter()
    jt = solve_joint(trace, devices, cap, joint_limit, lw.placement)
    t_decide = time.perf_counter()
    full = decide(trace, devices, cap, 0, "ilp", limit)  # the pass's path: ILP, sweeps, polish, multi-start
    t_decide = time.perf_counter() - t_decide
    return {"layers": layers, "experts": experts, "devices": devices,
            "layerwise": {"status": lw.status, "seconds": round(lw.seconds, 2), "max_layer_gap": lw.gap,
                          "first_sweep_seconds": round(lw.first_sweep_seconds, 2),
                          "objective": evaluate(trace, lw.placement).objective, "variables": lw.variables},
            "joint": {"status": jt.status, "seconds": round(time.perf_counter() - t, 2), "gap": jt.gap,
                      "bound": jt.bound, "objective": evaluate(trace, jt.placement).objective,
                      "variables": jt.variables, "rows": jt.rows},
            "decide": {"seconds": round(t_decide, 2), "objective": full.cost.objective,
                       "multistart_winner": full.summary["multistart_winner"],
                       "multistart_rounds": full.summary["multistart_rounds"]},
            "contiguous_objective": evaluate(trace, base.contiguous(layers, experts, devices)).objective,
            "greedy_objective": evaluate(trace, warm).objective}


SETTINGS = (("moderate", 1.0, 0.7, 3), ("strong", 1.0, 0.9, 2))


def modeled(quick: bool) -> dict[str, Any]:
    limit = 2.0 if quick else 8.0
    out: dict[str, Any] = {"generated": {}, "recorded": {}, "quick": quick}
    for label, zipf, aff, fan in SETTINGS:
        # Seed 0 is the headline; seeds 1 and 2 (same parameters) show the spread.
        for seed in (0,) if quick else (0, 1, 2):
            full = generate(layers=8, experts=16, tokens=256, calls=8, zipf=zipf, affinity=aff, fan=fan, seed=seed)
            cal, held = full.split()
            rows = [compare(cal, held, d, limit, 2) for d in (2, 4, 8)]
            name = label if seed == 0 else f"{label}, generator seed {seed}"
            out["generated"][name] = {"zipf": zipf, "affinity": aff, "fan": fan, "rows": rows}
    for name in ("zoo_moe", "mixtral"):
        cal, held = recorded(name, 4 if quick else 8)
        out["recorded"][name] = {"rows": [compare(cal, held, d, limit, 2) for d in (2, 4, 8)],
                                 "layers": cal.layers, "experts": cal.experts, "top_k": cal.top_k,
                                 "cal_tokens": cal.tokens, "held_tokens": held.tokens}
    out["scale"] = scale(8 if quick else 32, 64, 8, 10.0, 20.0 if quick else 60.0)
    return out


def render(out: dict[str, Any]) -> list[str]:
    md = ["# Expert placement (place-experts)", "",
          ("Cross-device tokens (dispatch + return, counted by replaying held-out routing) and "
          "max/mean device load (sum of per-layer busiest over per-layer mean) per placement; "
          "plans made on calibration traces only. `python -m benchmarks.expert_report`. "
          "Goal: >= 30% fewer held-out cross tokens than contiguous at a held-out max/mean <= contiguous's, "
          "judged for four placements: `ilp` (load-cap=layer, the default: each layer's busiest device at most "
          "contiguous's), `ilp_total` (load-cap=total: the sum over layers of the busiest loads at most "
          "contiguous's), each also `+replicas` (R=2 extra copies, one spare slot per device). All ILP rows "
          "include the multi-start search (`passes/experts/multistart.py`). Lower bound: the triangle LP of "
          "`passes/experts/bound.py` on the held-out trace, no placement within the capacity (no spare slot, "
          "any load) has fewer cross tokens."), ""]
    for label, g in out["generated"].items():
        md += table(f"Generated ({label}): Zipf {g['zipf']}, affinity {g['affinity']}, fan {g['fan']}; "
                    "8 layers x 16 experts, top-2, 1024 calibration / 1024 held-out tokens; replicas R=2",
                    g["rows"])
    for name, r in out["recorded"].items():
        md += table(f"Recorded: {name} (random weights, {r['layers']} layers x {r['experts']} experts, "
                    f"top-{r['top_k']}; {r['cal_tokens']} calibration / {r['held_tokens']} held-out tokens)",
                    r["rows"])
    sc = out["scale"]
    lw, jt = sc["layerwise"], sc["joint"]
    jl = 20 if out.get("quick") else 60
    md += [(f"### Solver at scale: {sc['layers']} layers x {sc['experts']} experts x {sc['devices']} devices "
           "(generated, moderate, 2048 tokens)"), "",
           "| form | limit | status | seconds | gap | modeled objective | variables |", "|---|---|---|---|---|---|---|",
           (f"| layer by layer | 10 s | {lw['status']} | {lw['seconds']} (first sweep "
            f"{lw.get('first_sweep_seconds', '?')}) | {lw['max_layer_gap']:.3f} (worst layer) | "
           f"{lw['objective']:.0f} | {lw['variables']} |"),
           (f"| joint (warm start: layer-wise) | {jl} s | {jt['status']} | {jt['seconds']} | "
           f"{jt['gap'] if jt['gap'] is None else round(jt['gap'], 3)} | {jt['objective']:.0f} | {jt['variables']} |"),
           *([(f"| place-experts (layer by layer, then multi-start in the time left) | 10 s | - | "
                f"{sc['decide']['seconds']} | - | {sc['decide']['objective']:.0f} | - |")] if "decide" in sc else []),
           "", f"Contiguous objective {sc['contiguous_objective']:.0f}, greedy {sc['greedy_objective']:.0f}.", ""]
    if out.get("a2a"):
        from benchmarks.expert_a2a import table as a2a_table

        md += ["### Measured all-to-all time on gloo (loopback, this 2-core machine)", "",
               ("The runtime's own exchange (`benchmarks/expert_a2a.py`) on the held-out generated "
               "routing (strong affinity), identity experts, 4 KiB rows. On loopback a row sent to "
               "another rank is a memory copy, like one kept, so these times follow calls and "
               "scheduling more than cross tokens: indicative only, nothing about NVLink or "
               "InfiniBand; 4 ranks oversubscribe 2 cores."), ""]
        for ranks, res in sorted(out["a2a"].items()):
            md += [f"{ranks} ranks ({res['repeats']} interleaved repeats, run took {res['wall_s']} s):", ""]
            md += a2a_table(res) + [""]
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller traces and limits (a smoke run)")
    ap.add_argument("--measure", type=int, nargs="*", default=[],
                    help="also measure all-to-all time on gloo with these rank counts (e.g. 2 4)")
    ap.add_argument("--a2a-only", action="store_true", help="keep the saved modeled numbers; only measure")
    ap.add_argument("--out", default=str(RESULTS / "experts"))
    a = ap.parse_args()
    saved = Path(a.out + ".json")
    old = json.loads(saved.read_text()) if saved.exists() else {}
    out = old if a.a2a_only and "scale" in old else modeled(a.quick)
    out["a2a"] = dict(old.get("a2a", {}))
    for ranks in a.measure:
        from benchmarks.expert_a2a import measure

        out["a2a"][str(ranks)] = measure(ranks, repeats=5 if ranks <= 2 else 3)
    md = render(out)
    saved.write_text(json.dumps(out, indent=1, default=float))
    Path(a.out + ".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
