"""Parallelism plans on the zoo: modeled time, bytes sent and memory per device, ILP vs baselines.

For encoder, gpt, moe (zoo shapes at batch 8) and a 24-layer gpt, plan with `shard` on
meshes 2, 4, 2x2, 8 and 2x4 priced for this machine's gloo (planning only beyond 2 ranks),
then the same models, and a wider 24-layer gpt, on an H100 8-GPU node (8, 2x4) and a
4-node H100 cluster (4x8). Every row sets the ILP beside replicate, data parallel and
Megatron; `solve s` is the ILP alone, `plan s` the whole pass (every baseline included).
A memory-budget table shows a plan that fits where data parallel does not, and the
pipeline table gives the stage DP against the equal split. `--measure` adds gloo runs of
gpt on 2 and 4 ranks and a 2x2 pipeline of shard plans (measured / modeled, each rank's
local programs built by TVM and by the eager interpreter, on a shared 2-core host).
Writes shard.md, shard.json and shard_summary.md (the README's excerpt).
Usage: python -m benchmarks.shard_report [--out benchmarks/results] [--measure]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from compiler.distributed.plan import capture
from compiler.driver import module_decisions
from examples.zoo import encoder, gpt_layers, moe_layers
from ir import parse_module
from passes import run_pipeline
from passes.shard.baselines import BASELINES

MODELS = {
    "encoder": lambda: encoder(batch=8),
    "gpt": lambda: gpt_layers(4, batch=8),
    "moe": lambda: moe_layers(batch=8),
    "gpt24": lambda: gpt_layers(24, batch=8),
}
WIDE = {"gpt24-wide (d512, s128, b16)": lambda: gpt_layers(24, batch=16, seq=128, dim=512, heads=8)}
GLOO_MESHES = ("2", "4", "2x2", "8", "2x4")
GPU_RUNS = (("h100-node", "8"), ("h100-node", "2x4"), ("h100-4node", "4x8"))


def plan(text: str, spec: str) -> dict:
    module = parse_module(text)
    start = time.perf_counter()
    run_pipeline(module, spec)
    out = dict(module_decisions(module).get("shard") or module_decisions(module).get("pipeline"))
    out["pass_seconds"] = time.perf_counter() - start
    return out


def row(model: str, s: dict) -> str:
    cells = [model, s["cluster"], s["mesh"], str(s["ops"]), str(s["classes"])]
    for name in ("ilp", *BASELINES):
        key = "" if name == "ilp" else f"{name}_"
        if f"{key}time_us" not in s:
            cells.append("infeasible")
            continue
        cells.append(f"{s[f'{key}time_us']:.0f} us / {s[f'{key}comm_mb']:.2f} MB / {s[f'{key}memory_mb']:.1f} MB")
    best = min(s[f"{b}_time_us"] for b in BASELINES if f"{b}_time_us" in s)
    cells += [f"{best / s['time_us']:.2f}x", s["status"], f"{s.get('solve_seconds', 0):.2f}", f"{s['pass_seconds']:.2f}"]
    return "| " + " | ".join(cells) + " |"


HEAD = ("| model | cluster | mesh | ops | classes | ILP: time / sent / memory per device | replicate | data parallel "
        "| Megatron | best baseline / ILP | status | solve s | plan s |\n|" + "---|" * 13)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--measure", action="store_true", help="also run gpt on 2 and 4 gloo ranks")
    parser.add_argument("--measure-only", action="store_true",
                        help="only redo the measured table, keeping the planning tables already written")
    args = parser.parse_args(argv)
    if args.measure_only:
        return remeasure(args.out)
    texts = {name: capture(*factory()).module_text for name, factory in {**MODELS, **WIDE}.items()}
    rows, lines = [], ["## Sharding plans on this machine's gloo (planning only beyond 2 ranks)", "", HEAD]
    for name in MODELS:
        for mesh in GLOO_MESHES:
            s = plan(texts[name], f"shard{{mesh={mesh}}}")
            rows.append({"model": name, **s})
            lines.append(row(name, s))
            print(lines[-1], flush=True)
    lines += ["", "## Sharding plans on H100 specs (planning only)", "", HEAD]
    for name in (*MODELS, *WIDE):
        for cluster, mesh in GPU_RUNS:
            s = plan(texts[name], f"shard{{mesh={mesh} cluster={cluster}}}")
            rows.append({"model": name, **s})
            lines.append(row(name, s))
            print(lines[-1], flush=True)
    wide = next(iter(WIDE))
    lines += ["", f"## A memory budget data parallel does not meet ({wide}, h100-node, mesh 8)", "",
              ("| memory-gb | ILP time us | ILP memory MB | data parallel us / MB (fits) | Megatron us / MB (fits) "
               "| best fitting baseline / ILP | status |"),
              "|---|---|---|---|---|---|---|"]
    for gb in (None, 0.2, 0.06):
        spec = "shard{mesh=8 cluster=h100-node" + ("" if gb is None else f" memory-gb={gb}") + "}"
        s = plan(texts[wide], spec)
        rows.append({"model": wide, "memory_gb": gb, **s})
        fit = [s[f"{b}_time_us"] for b in BASELINES if s.get(f"{b}_fits")]
        ratio = f"{min(fit) / s['time_us']:.2f}x" if fit else "none fits"
        cells = [f"{s[f'{b}_time_us']:.0f} / {s[f'{b}_memory_mb']:.1f} ({'yes' if s[f'{b}_fits'] else 'no'})"
                 for b in ("data-parallel", "megatron")]
        lines.append(f"| {gb or 'none'} | {s['time_us']:.0f} | {s['memory_mb']:.1f} | {cells[0]} | {cells[1]} "
                     f"| {ratio} | {s['status']} |")
        print(lines[-1], flush=True)
    lines += ["", "## Pipeline stages (DP) against the equal split", "",
              "| model | cluster | stages x devices | microbatches | layers | cuts (equal split) | step us DP / equal | DP s |",
              "|---|---|---|---|---|---|---|---|"]
    for name, cluster, stages, mesh, m in (("gpt24", "gloo", 2, 2, 4), ("gpt24", "h100-node", 4, 8, 8),
                                          (wide, "h100-4node", 4, 32, 16)):
        s = plan(texts[name], f"pipeline{{stages={stages} microbatches={m} mesh={mesh} cluster={cluster}}}")
        rows.append({"model": name, **s})
        lines.append(f"| {name} | {cluster} | {stages} x {s['devices_per_stage']} | {m} | {s['layers']} | {s['cuts']} "
                     f"({s['equal_split_cuts']}) | {s['objective_us']:.0f} / {s['equal_split_us']:.0f} | {s['seconds']:.2f} |")
        print(lines[-1], flush=True)
    if args.measure:
        lines += ["", *measure()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shard.md").write_text("\n".join(lines) + "\n")
    (args.out / "shard.json").write_text(json.dumps(rows, indent=1, default=str))
    (args.out / "shard_summary.md").write_text(summary(lines))
    print("\n".join(lines))
    return 0


def summary(lines: list[str]) -> str:
    """What the README shows: the gpt24 rows of the two sharding tables, then every other table."""
    out, section = [], 0
    for line in lines:
        if line.startswith("## "):
            section += 1
        keep = section > 2 or not line.startswith("| ") or "gpt24" in line or line.startswith("| model")
        if keep:
            out.append(line)
    return "\n".join(out).replace("## ", "#### ") + "\n"


MEASURED = "## Measured on gloo ranks"


def measure() -> list[str]:
    """gpt (4 blocks, batch 4) on 2 and 4 gloo ranks under each plan, each rank's local programs
    built by TVM and by the eager interpreter: measured vs modeled, collectives issued vs predicted;
    then a 2-stage pipeline whose stages are 2-device shard plans (2x2)."""
    from compiler.distributed.launch import spawn
    from compiler.distributed.plan import plan_model

    model, inputs = gpt_layers(4, batch=4)
    cap = capture(model, inputs)
    out = [(f"{MEASURED} (gpt, batch 4; 1 thread per rank on a shared, busy 2-core host: the timings "
           "are indicative only, the collective counts and bytes are exact; median of 3 calls; plans priced "
           "for gloo)"), "",
           ("| ranks | plan | local programs built by | local programs | measured ms | modeled ms "
            "| measured / modeled | collectives issued = predicted | MB sent by collectives (modeled) | max abs error |"),
           "|---|---|---|---|---|---|---|---|---|---|"]
    runs: list[tuple[tuple[int, ...], str]] = [((2,), s) for s in ("ilp", *BASELINES)]
    runs += [((4,), s) for s in ("ilp", *BASELINES)]
    runs += [((2, 2), f"pipeline{{stages=2 microbatches=2 mesh=4}},shard{{mesh=2 solver={s}}}") for s in ("ilp", "megatron")]
    for mesh in ((2,), (4,), (2, 2)):
        jobs, names = [], []
        for m, solver in runs:
            if m != mesh:
                continue
            spec = solver if solver.startswith("pipeline") else f"shard{{mesh={mesh[0]} solver={solver}}}"
            p = plan_model(cap, inputs, spec, mesh)
            for backend in ("tvm", "eager"):
                jobs.append((p.kind, (p.payload(), tuple(inputs), p.eager_outputs, 1e-4, 1e-4), backend))
                names.append((solver.replace("pipeline{stages=2 microbatches=2 mesh=4},", ""), backend))
        reports = spawn("benchmarks.shard_report:_run_timed", math.prod(mesh), (jobs,), mesh=mesh, timeout_s=300)
        for i, (name, backend) in enumerate(names):
            r = reports[0][i]
            match = all(rank[i]["collectives_match"] for rank in reports)
            issued = r["issued"] if "stage" not in r else {f"rank {k}": rank[i]["issued"] for k, rank in enumerate(reports)}
            same = all(math.isclose(rank[i]["sent_mb"], rank[i]["modeled_comm_mb"], rel_tol=1e-6, abs_tol=1e-9)
                       for rank in reports)
            who = "" if "stage" not in r else "rank 0: "
            sent = f"{who}{r['sent_mb']:.3f} ({r['modeled_comm_mb']:.3f}); all ranks equal: {same}"
            out.append(f"| {'x'.join(map(str, mesh))} | {name} | {backend} | {r['local_programs']} "
                       f"| {r['measured_ms']:.1f} | {r['modeled_ms']:.2f} | {r['measured_ms'] / r['modeled_ms']:.1f} "
                       f"| {issued} (all ranks equal the plan: {match}) | {sent} | {r['max_abs_error']:.1e} |")
            print(out[-1], flush=True)
    return out


def _run_timed(ctx, jobs: list[tuple]) -> list[dict]:
    """Rank entry: each plan built, run once to check, then timed (median of 3)."""
    from compiler.distributed import pipeline_runtime, shard_runtime

    out = []
    for kind, args, backend in jobs:
        run = pipeline_runtime.run_rank if kind == "pipeline" else shard_runtime.run_rank
        out.append(run(ctx, *args, repeats=3, backend=backend))
    return out


def remeasure(out_dir: Path) -> int:
    """Replace the measured section of shard.md and shard_summary.md."""
    table = measure()
    for name, heading in (("shard.md", "## Measured on"), ("shard_summary.md", "#### Measured on")):
        path = out_dir / name
        text = path.read_text()
        kept = text.split(heading)[0].rstrip("\n")
        block = "\n".join(table)
        if name == "shard_summary.md":
            block = block.replace("## ", "#### ")
        path.write_text(kept + "\n\n" + block + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
