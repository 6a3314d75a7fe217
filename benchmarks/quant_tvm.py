"""Quantized models on the TVM backend: latency and weight memory against fp32 Kiln/TVM.

    python -m benchmarks.quant_tvm [--models mlp,encoder,gpt,moe] [--formats int8,int4_g64]
        [--rounds 7] [--threads 1] [--out benchmarks/results]

For each zoo model, one process builds the fp32 program and one program per format
(weight-only, the format applied uniformly to every quantizable layer), each with the
TVM target's own pipeline, and times them interleaved (`benchmarks/timing.py`: rotating
rounds, medians). Columns:

- latency: median ms per call and the ratio to fp32 Kiln/TVM (< 1 is faster); eager
  torch fp32 is timed alongside for scale;
- memory: bytes of every parameter bound to the executable (fp32 embeddings, norms and
  biases included) and of the quantized layers' own parameters (packed codes + scales)
  against those layers' fp32 weights;
- error: max |TVM - interpreter| / max |interpreter| over the outputs (the interpreter runs
  the quantized IR's exact emulation), and the paths the dequantizes took
  (`backends/tvm/quant_lower.py`).

Writes `quant_tvm.md` and `quant_tvm.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from backends.base import BuildOptions
from backends.tvm.backend import TVMBackend, TVMKernel
from backends.tvm.pipeline import kiln_pipeline
from backends.tvm.target import ThreadConfig, configure_threads, host_cpu
from benchmarks.quant_report import capture
from benchmarks.timing import TimingOptions, TimingStats, time_interleaved
from compiler.calibration import run_pipeline_quantized
from examples.zoo import ZOO
from ir.interpreter import run
from ir.program import Program
from passes import run_pipeline
from passes.quantization import QuantizeOptions

MODELS = ("mlp", "cnn", "encoder", "gpt", "moe")
FORMATS = ("int8", "int4_g64")


def quantized_pipeline(fmt: str) -> str:
    """One format everywhere (a budget that never binds), then the target's pipeline."""
    return f"quantize{{formats={fmt} solver=greedy avg-bits=32}},{kiln_pipeline()}"


def build(
    program: Program, inputs: Sequence[torch.Tensor], fmt: str | None, threads: int
) -> TVMKernel:
    if fmt is None:
        run_pipeline(program.module, kiln_pipeline())
    else:
        options = QuantizeOptions(formats=(fmt,), compare=False, sensitivity="proxy")
        run_pipeline_quantized(program, quantized_pipeline(fmt), inputs, options=options)
    return TVMBackend().build(program, BuildOptions(cache_dir=None, num_threads=threads))


def layer_bytes(kernel: TVMKernel, program: Program) -> tuple[int, int]:
    """(bytes of the quantized layers' packed codes and scales, their fp32 weights' bytes)."""
    stored = sum(
        t.numel() * t.element_size()
        for n, t in program.params.items()
        if n.endswith((".qcodes", ".qscales")) and n.rsplit(".", 1)[0] in kernel.quant_paths
    )
    summary = program.module.attributes.get("kiln.quantization")
    fp32 = int(summary.data["bytes_fp32"].value.data) if summary is not None else 0
    return stored, fp32


def max_rel_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    for g, w in zip((t.detach() for t in got), (t.detach() for t in want)):
        if w.is_floating_point():
            worst = max(worst, float((g - w).abs().max() / w.abs().max().clamp_min(1e-30)))
        elif not torch.equal(g, w):
            return float("inf")
    return worst


def model_rows(
    name: str, formats: Sequence[str], timing: TimingOptions, threads: int
) -> list[dict[str, Any]]:
    model, inputs = ZOO[name]()
    variants: dict[str, dict[str, Any]] = {}
    calls = {"eager": lambda: model(*inputs)}
    for fmt in (None, *formats):
        label = fmt or "fp32"
        program = capture(model, inputs)
        tic = time.perf_counter()
        kernel = build(program, inputs, fmt, threads)
        build_s = time.perf_counter() - tic
        got = kernel(*inputs)
        stored, fp32 = layer_bytes(kernel, program) if fmt else (0, 0)
        variants[label] = {
            "model": name,
            "format": label,
            "build_s": round(build_s, 2),
            "param_bytes": kernel.param_bytes,
            "layer_bytes": stored,
            "layer_fp32_bytes": fp32,
            "kernels": kernel.num_kernels,
            "error": max_rel_error(got, run(program, *inputs)),
            "paths": dict(Counter(kernel.quant_paths.values())),
        }
        calls[label] = lambda k=kernel: k(*inputs)
    with torch.no_grad():
        stats = time_interleaved(calls, timing)
    base = stats["fp32"]
    rows = []
    for label, row in variants.items():
        s = stats[label]
        failed = next((t for t in (s, base) if isinstance(t, Exception)), None)
        if failed is not None:
            raise RuntimeError(f"{name} {label}: timing failed") from failed
        row["median_ms"] = s.median_ms
        row["latency_ratio"] = s.median_ms / base.median_ms
        # The 10th percentile moves less with other processes' bursts than the median.
        row["p10_ms"] = s.p10_ms
        row["p10_ratio"] = s.p10_ms / base.p10_ms
        row["memory_ratio"] = row["param_bytes"] / variants["fp32"]["param_bytes"]
        row["eager_ms"] = (
            stats["eager"].median_ms if isinstance(stats["eager"], TimingStats) else None
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    setup = (
        f"{meta['cpu']}, {meta['threads']} thread(s) for TVM and torch, load average "
        f"{meta['load'][0]:.1f} -> {meta['load'][1]:.1f} (shared machine); medians of "
        f"{meta['rounds']} interleaved rounds (`{meta['command']}`). Weight-only, one format "
        "for every layer."
    )
    legend = (
        "latency x / p10 x / memory x: quantized over fp32 Kiln/TVM, by median and by 10th "
        "percentile latency and by bytes (lower is better). params: every "
        "tensor bound to the executable; layers x: the quantized layers' packed codes + scales "
        "over their fp32 weights."
    )
    lines = [
        "# Quantized models on Kiln/TVM vs fp32 Kiln/TVM",
        "",
        setup,
        legend,
        "",
        "| model | format | ms | latency x | p10 x | eager fp32 ms | params | memory x | layers x | max rel err vs emulation | paths |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        layers = f"{r['layer_bytes'] / r['layer_fp32_bytes']:.3f}" if r["layer_fp32_bytes"] else "-"
        paths = ", ".join(f"{k} {v}" for k, v in sorted(r["paths"].items())) or "-"
        lines.append(
            f"| {r['model']} | {r['format']} | {r['median_ms']:.3f} | {r['latency_ratio']:.2f} | "
            f"{r['p10_ratio']:.2f} | "
            f"{r['eager_ms']:.3f} | {r['param_bytes'] / 2**20:.2f} MiB | {r['memory_ratio']:.3f} | {layers} | "
            f"{r['error']:.1e} | {paths} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--rounds", type=int, default=7)
    # One thread by default: on a shared 2-core machine a 2-thread barrier waits out other
    # processes' timeslices (backends/tvm/NOTES.md), which swamps what is being measured.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    formats = [f for f in args.formats.split(",") if f]
    timing = TimingOptions(rounds=args.rounds)
    configure_threads(ThreadConfig(num_threads=args.threads))
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with Progress() as progress:
        task = progress.add_task("models", total=len(models))
        for name in models:
            progress.update(task, description=f"{name}: build + time")
            rows += model_rows(name, formats, timing, args.threads)
            progress.advance(task)
    meta = {
        "cpu": f"{platform.machine()} {host_cpu()}",
        "load": [load_before, os.getloadavg()[0]],
        "command": "python -m benchmarks.quant_tvm "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, meta)
    (args.out / "quant_tvm.md").write_text(text)
    (args.out / "quant_tvm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    Console(soft_wrap=True).print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
