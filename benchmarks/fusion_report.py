"""Fusion decisions on the zoo: kernels, modeled bytes and time for none / greedy / ILP.

For each zoo model (and a 24-layer GPT, about a thousand ops) and for each target's
fusion rules (the pipelines the TVM and Triton backends declare), run capture and the
target's pipeline and read the `kiln.fusion` summary the pass leaves on the module.
A second table sets the ILP without recompute beside the ILP with it (the default), and
gives the wall time of the `fuse` pass alone, which must stay within its 10 s limit.
Usage: python -m benchmarks.fusion_report [--out benchmarks/results] [--relax-convexity]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from backends.registry import get_backend
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from compiler.capture.partition import IGNORED
from compiler.driver import module_decisions
from examples.zoo import ZOO, gpt_layers
from passes import run_pipeline

TARGETS = ("tvm", "triton")


def fusion_summary(model, inputs, pipeline: str) -> dict:
    """The `kiln.fusion` summary, plus `fuse_seconds`: the fuse pass alone (it runs last)."""
    plan = plan_partitions(from_model(model, inputs))
    part = max(plan.partitions(), key=len)
    conv = convert_nodes(part, plan.consts, users_outside(part, IGNORED))
    before, fuse = pipeline.rsplit(",fuse", 1)
    run_pipeline(conv.program.module, before)
    start = time.perf_counter()
    run_pipeline(conv.program.module, "fuse" + fuse)
    seconds = time.perf_counter() - start
    return {**module_decisions(conv.program.module)["fusion"], "fuse_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--relax-convexity", action="store_true",
                        help="fuse with relax-convexity=true; writes fusion_relaxed.{md,json}")
    args = parser.parse_args(argv)
    stem = "fusion_relaxed" if args.relax_convexity else "fusion"
    models = {name: factory for name, factory in ZOO.items()}
    models["gpt24"] = lambda: gpt_layers(24)
    rows = []
    for target in TARGETS:
        pipeline = get_backend(target).pipeline()
        if args.relax_convexity:
            pipeline = pipeline.replace("fuse{", "fuse{relax-convexity=true ", 1)
        for name, factory in models.items():
            model, inputs = factory()
            s = fusion_summary(model, inputs, pipeline)
            rows.append({"target": target, "model": name, **s})
            print(target, name, {k: s[k] for k in ("kernels_none", "kernels_greedy", "kernels_ilp", "status", "recomputed", "fuse_seconds") if k in s})
    lines = [
        "| target | model | ops | kernels none / greedy / ILP | MB moved none / greedy / ILP | modeled us greedy / ILP | ILP vs greedy | solver | solve s (enum s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mb = " / ".join(f"{r[f'bytes_{k}'] / 1e6:.2f}" for k in ("none", "greedy", "ilp"))
        gain = 1 - r["time_us_ilp"] / r["time_us_greedy"]
        lines.append(
            f"| {r['target']} | {r['model']} | {r['ops']} | {r['kernels_none']} / {r['kernels_greedy']} / {r['kernels_ilp']} "
            f"| {mb} | {r['time_us_greedy']:.0f} / {r['time_us_ilp']:.0f} | {gain * 100:+.2f}% better "
            f"| {r['status']} | {r['solve_seconds']:.2f} ({r['enumerate_seconds']:.2f}) |"
        )
    lines += ["", *recompute_table(rows)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n".join(lines))
    return 0


def recompute_table(rows: list[dict]) -> list[str]:
    """ILP without recompute -> with it: kernels, bytes, objective, ops cloned, fuse time."""
    lines = [
        "| target | model | kernels | MB moved | modeled us (objective) | ops recomputed | recompute solve s | fuse pass s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "objective_us_no_recompute" not in r:  # the partition ILP fell back: recompute never ran
            lines.append(f"| {r['target']} | {r['model']} | n/a | n/a | n/a | 0 | {r['status']} | {r['fuse_seconds']:.2f} |")
            continue
        # No runnable cover in time ("cyclic", "time_limit" without one): the partition stands.
        recompute_us = r.get("objective_us_recompute", r["objective_us_no_recompute"])
        lines.append(
            f"| {r['target']} | {r['model']} | {r['kernels_no_recompute']} -> {r['kernels_ilp']} "
            f"| {r['bytes_no_recompute'] / 1e6:.2f} -> {r['bytes_ilp'] / 1e6:.2f} "
            f"| {r['objective_us_no_recompute']:.1f} -> {recompute_us:.1f} "
            f"| {r['recomputed']} | {r['recompute_seconds']:.2f} ({r['recompute_status']}) | {r['fuse_seconds']:.2f} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
