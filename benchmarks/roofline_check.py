"""How well does the roofline model rank real kernels? Spearman over every fused TVM kernel of the zoo.

For each zoo model: capture, run the TVM target's pipeline (with `fuse`), then cut every
fused group out as a program of its own (`ir.extract`), build it with the TVM backend and
time one call (median of repeated calls, including the VM's per-call cost, which the
roofline's launch term stands for). The prediction is the fuse pass's own cost for that
group. Usage: python -m benchmarks.roofline_check [--models mlp,gpt] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.progress import Progress

from backends import BuildOptions, get_backend
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from cost_models.hardware import get_hardware
from examples.zoo import ZOO
from ir.extract import extract
from passes import run_pipeline
from passes.fusion_graph import FusionGraph


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def time_call(fn, args, min_s: float = 0.05) -> float:
    for _ in range(3):
        fn(*args)
    samples = []
    start = time.perf_counter()
    while len(samples) < 15 or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def model_groups(name: str):
    model, inputs = ZOO[name]()
    plan = plan_partitions(from_model(model, inputs))
    part = plan.partitions()[0]
    conv = convert_nodes(part, plan.consts, users_outside(part))
    backend = get_backend("tvm")
    run_pipeline(conv.program.module, backend.pipeline())
    graph = FusionGraph.build(conv.program.forward, get_hardware("cpu"))
    groups: dict[int, list[int]] = {}
    for i, op in enumerate(graph.ops):
        groups.setdefault(op.attributes["group"].value.data, []).append(i)
    return conv.program, graph, list(groups.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    backend = get_backend("tvm")
    rows = []
    with Progress() as progress:
        for name in args.models.split(","):
            program, graph, groups = model_groups(name)
            task = progress.add_task(f"{name}: kernels", total=len(groups))
            for members in groups:
                ops = [graph.ops[i] for i in members]
                sub = extract(ops, program.params)
                kernel = backend.build(sub, BuildOptions(cache_dir=None))
                inputs = [_example(a.type) for a in sub.forward.body.block.args]
                measured = time_call(kernel, inputs)
                rows.append({
                    "model": name,
                    "ops": "+".join(op.name.removeprefix("kiln.") for op in ops),
                    "predicted_us": graph.cost(members) * 1e6,
                    "measured_us": measured * 1e6,
                })
                progress.advance(task)
    rho = spearman([r["predicted_us"] for r in rows], [r["measured_us"] for r in rows])
    per_model = {
        m: spearman([r["predicted_us"] for r in rows if r["model"] == m], [r["measured_us"] for r in rows if r["model"] == m])
        for m in dict.fromkeys(r["model"] for r in rows)
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "roofline.json").write_text(json.dumps({"spearman": rho, "per_model": per_model, "kernels": rows}, indent=1))
    lines = [f"Roofline vs measured TVM kernel time: Spearman {rho:.3f} over {len(rows)} kernels", ""]
    lines += ["| model | kernels | Spearman |", "|---|---|---|"]
    lines += [f"| {m} | {sum(r['model'] == m for r in rows)} | {v:.3f} |" for m, v in per_model.items()]
    (args.out / "roofline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _example(tensor_type) -> torch.Tensor:
    from ir import dtypes

    shape, dtype = dtypes.shape_of(tensor_type), dtypes.dtype_of(tensor_type)
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    return torch.zeros(shape, dtype=dtype)  # indices: row 0 is always valid


if __name__ == "__main__":
    raise SystemExit(main())
