"""Fusion decisions on the zoo: kernels, modeled bytes and time for none / greedy / ILP.

For each zoo model (and a 24-layer GPT, about a thousand ops) and for each target's
fusion rules (the pipelines the TVM and Triton backends declare), run capture and the
target's pipeline and read the `kiln.fusion` summary the pass leaves on the module.
Usage: python -m benchmarks.fusion_report [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
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
    plan = plan_partitions(from_model(model, inputs))
    part = max(plan.partitions(), key=len)
    conv = convert_nodes(part, plan.consts, users_outside(part, IGNORED))
    run_pipeline(conv.program.module, pipeline)
    return module_decisions(conv.program.module)["fusion"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    models = {name: factory for name, factory in ZOO.items()}
    models["gpt24"] = lambda: gpt_layers(24)
    rows = []
    for target in TARGETS:
        pipeline = get_backend(target).pipeline()
        for name, factory in models.items():
            model, inputs = factory()
            s = fusion_summary(model, inputs, pipeline)
            rows.append({"target": target, "model": name, **s})
            print(target, name, {k: s[k] for k in ("kernels_none", "kernels_greedy", "kernels_ilp", "status")})
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion.md").write_text("\n".join(lines) + "\n")
    (args.out / "fusion.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
