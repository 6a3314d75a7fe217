"""GEMM throughput: one `nn.Linear(K, N)` on M rows, Kiln against torch, ONNX Runtime and numpy.

    python -m benchmarks.gemm [--rows 1,8,32,128,512,2048] [--sizes 768,3072]
                              [--systems eager,onnxruntime,kiln,kiln-library,numpy]
                              [--out DIR | --update-results]

Why a separate benchmark: a model's latency mixes every kernel and the call path, so it
cannot say whether Kiln's packed dense kernel (`backends/tvm/dense_packed.py`) or the
library wins at a given shape, which is what the rule choosing between them needs. Each
problem (M, N = K) is timed interleaved across systems, like `benchmarks.run`, and given as
GFLOP/s (2 M N K per call over the median time). `kiln` is the rule's choice (its path is
shown), `kiln-library` is Kiln with every linear on torch's GEMM. fp32 only: Kiln's int8
weight kernels dequantize in registers and have no VNNI path yet (see the README).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from benchmarks.run import COMMITTED_RESULTS, core_count, machine_meta, results_dir
from benchmarks.systems import System, make_system, one_line_error
from benchmarks.timing import TimingOptions, TimingStats, time_interleaved

ROWS = (1, 8, 32, 128, 512, 2048)
SIZES = (768, 3072)
SYSTEMS = ("eager", "onnxruntime", "kiln", "kiln-library", "numpy")


class NumpySystem(System):
    """`x @ W.T + b` in numpy (its BLAS, on the same threads as torch where it obeys them)."""

    name = "numpy"

    def prepare(self, model: torch.nn.Module, inputs: tuple) -> None:
        self.wt = np.ascontiguousarray(model.weight.detach().numpy().T)
        self.b = model.bias.detach().numpy()

    def call(self, inputs: tuple) -> torch.Tensor:
        return torch.from_numpy(inputs[0].numpy() @ self.wt + self.b)


def _system(name: str) -> System:
    return NumpySystem() if name == "numpy" else make_system(name)


def bench_problem(m: int, k: int, systems: Sequence[str], options: TimingOptions) -> dict[str, dict]:
    """One (M, N = K) problem on every system: {system: {gflops, median_ms, path | error}}."""
    torch.manual_seed(0)
    model, x = torch.nn.Linear(k, k).eval(), torch.randn(m, k)
    with torch.inference_mode():
        ref = model(x)
    cells: dict[str, dict] = {}
    fns = {}
    for name in systems:
        system = _system(name)
        try:
            system.prepare(model, (x,))
            with torch.inference_mode():
                err = (system.call((x,)) - ref).abs().max().item()
            if err > 1e-3 * max(1.0, ref.abs().max().item()):
                raise RuntimeError(f"wrong result: max abs error {err:.2e}")
        except Exception as exc:  # noqa: BLE001 - a failing system is a cell, not a crash
            cells[name] = {"error": one_line_error(exc)}
            continue
        report = system.info.get("report") or {}
        if paths := report.get("dense_paths"):
            cells[name] = {"path": next(iter(paths.values()))}
        fns[name] = (lambda s=system: s.call((x,)))
    with torch.inference_mode():
        timed = time_interleaved(fns, options)
    for name, result in timed.items():
        cell = cells.setdefault(name, {})
        if isinstance(result, TimingStats):
            cell.update(median_ms=result.median_ms, gflops=2 * m * k * k / (result.median_ms * 1e6))
        else:
            cell["error"] = one_line_error(result)
    return cells


def to_markdown(meta: dict, table: list[dict], systems: Sequence[str]) -> str:
    lines = [f"# GEMM: `{meta['command']}` · {meta['date']} · {meta['cpu']} · {meta['threads']} threads", "",
             "GFLOP/s of `nn.Linear(K, K)` on M rows (median of interleaved rounds; higher is better). "
             "`kiln` takes the packed TIR kernel or the library by its rule (path in the last column).", "",
             "| M | N = K | " + " | ".join(systems) + " | kiln's path |",
             "|---|---|" + "---|" * len(systems) + "---|"]
    for row in table:
        cells = []
        for s in systems:
            c = row["cells"].get(s, {})
            cells.append(f"{c['gflops']:.0f}" if "gflops" in c else f"error: {c.get('error', '-')[:60]}")
        path = row["cells"].get("kiln", {}).get("path", "-").split(",")[0]
        lines.append(f"| {row['m']} | {row['k']} | " + " | ".join(cells) + f" | {path} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gemm", description=__doc__.split("\n")[0])
    csv_ints = lambda text: [int(t) for t in text.split(",") if t.strip()]  # noqa: E731
    parser.add_argument("--rows", type=csv_ints, default=list(ROWS))
    parser.add_argument("--sizes", type=csv_ints, default=list(SIZES), help="N = K")
    parser.add_argument("--systems", type=lambda t: [s for s in t.split(",") if s], default=list(SYSTEMS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--update-results", action="store_true", help="write benchmarks/results/gemm.*")
    args = parser.parse_args(argv)
    out_dir = results_dir(args.out, args.update_results)
    threads = core_count()
    torch.set_num_threads(threads)
    options = TimingOptions(rounds=args.rounds, calls=3, warmup=2, min_round_s=0.2, max_round_s=2.0)
    meta = machine_meta(threads, shlex.join(["python", "-m", "benchmarks.gemm", *argv]))
    table = []
    problems = [(m, k) for k in args.sizes for m in args.rows]
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("GEMM", total=len(problems))
        for m, k in problems:
            bar.update(task, description=f"M={m} N=K={k}")
            table.append({"m": m, "k": k, "cells": bench_problem(m, k, args.systems, options)})
            bar.advance(task)
    text = to_markdown(meta, table, args.systems)
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gemm.md").write_text(text)
    (out_dir / "gemm.json").write_text(json.dumps({"meta": meta, "table": table}, indent=2) + "\n")
    where = "the committed results" if out_dir == COMMITTED_RESULTS else str(out_dir)
    print(f"wrote gemm.md and gemm.json under {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
