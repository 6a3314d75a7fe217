"""GEMM throughput: one `nn.Linear(K, N)` on M rows, Kiln against torch, ONNX Runtime and numpy.

    python -m benchmarks.gemm [--rows 1,8,32,128,512,2048] [--sizes 768,3072]
                              [--systems eager,onnxruntime,kiln,kiln-library,numpy,
                                         kiln-int8,torch-int8,onnxruntime-int8]
                              [--quick] [--out DIR | --update-results]

Why a separate benchmark: a model's latency mixes every kernel and the call path, so it
cannot say whether Kiln's packed dense kernel (`backends/tvm/dense_packed.py`) or the
library wins at a given shape, which is what the rule choosing between them needs. Each
problem (M, N = K) is timed interleaved across systems, like `benchmarks.run`, and given as
GFLOP/s (2 M N K per call over the median time). `kiln` is the rule's choice (its path is
shown), `kiln-library` is Kiln with every linear on torch's GEMM.

int8 columns (W8A8 with per-row dynamic activation scales, int32 sums, per-channel weight
scales; their results are checked against fp32 at a W8A8 tolerance): `kiln-int8` is the
linear through `quantize{formats=int8_dyn}` (Kiln's `int8_dyn` kernel, `vpdpbusd` on
AVX-512 VNNI hosts, `backends/tvm/quant_vnni.py`; its path is shown); `torch-int8` is
`torch.ao.quantization.quantize_dynamic` (FBGEMM's dynamic quantized linear);
`onnxruntime-int8` is ONNX Runtime's `quantize_dynamic` (DynamicQuantizeLinear +
MatMulInteger, per-channel weights). `--quick` runs one tiny problem (a smoke test).
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
from benchmarks.systems import KilnSystem, OnnxRuntimeSystem, System, make_system, one_line_error
from benchmarks.timing import TimingOptions, TimingStats, time_interleaved

ROWS = (1, 8, 32, 128, 512, 2048)
SIZES = (768, 3072)
SYSTEMS = ("eager", "onnxruntime", "kiln", "kiln-library", "numpy", "kiln-int8", "torch-int8", "onnxruntime-int8")
INT8_TOLERANCE = 5e-2  # max abs error over max |y|: W8A8 rounding, far above a wrong kernel's


class NumpySystem(System):
    """`x @ W.T + b` in numpy (its BLAS, on the same threads as torch where it obeys them)."""

    name = "numpy"

    def prepare(self, model: torch.nn.Module, inputs: tuple) -> None:
        self.wt = np.ascontiguousarray(model.weight.detach().numpy().T)
        self.b = model.bias.detach().numpy()

    def call(self, inputs: tuple) -> torch.Tensor:
        return torch.from_numpy(inputs[0].numpy() @ self.wt + self.b)


def _system(name: str) -> System:
    if name in INT8_SYSTEMS:
        return INT8_SYSTEMS[name]()
    return NumpySystem() if name == "numpy" else make_system(name)


class KilnInt8System(KilnSystem):
    """The linear through Kiln's quantize pass with the `int8_dyn` format (W8A8 dynamic)."""

    name = "kiln-int8"

    def __init__(self, target: str = "tvm") -> None:
        super().__init__(target)
        from passes import DEFAULT_PIPELINE

        self.PIPELINE = (f"{DEFAULT_PIPELINE},quantize{{formats=int8_dyn avg-bits=32 solver=greedy}},"
                         "fuse{fuse-contractions=false multi-reduction=true},map-memory")


class TorchInt8System(System):
    """`torch.ao.quantization.quantize_dynamic`: FBGEMM's dynamic int8 linear."""

    name = "torch-int8"

    def prepare(self, model: torch.nn.Module, inputs: tuple) -> None:
        from torch.ao.quantization import quantize_dynamic

        self.model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

    def call(self, inputs: tuple) -> torch.Tensor:
        return self.model(*inputs)


class OnnxRuntimeInt8System(OnnxRuntimeSystem):
    """ONNX Runtime on the model after its `quantize_dynamic` (per-channel int8 weights)."""

    name = "onnxruntime-int8"

    def _export(self, model: torch.nn.Module, inputs: tuple, path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32 = path.with_name("fp32.onnx")
        super()._export(model, inputs, fp32)
        quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8)


INT8_SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (KilnInt8System, TorchInt8System, OnnxRuntimeInt8System)
}


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
            tol = INT8_TOLERANCE if name in INT8_SYSTEMS else 1e-3
            if err > tol * max(1.0, ref.abs().max().item()):
                raise RuntimeError(f"wrong result: max abs error {err:.2e}")
        except Exception as exc:  # noqa: BLE001 - a failing system is a cell, not a crash
            cells[name] = {"error": one_line_error(exc)}
            continue
        report = system.info.get("report") or {}
        if paths := report.get("quant_paths") or report.get("dense_paths"):
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
             ("GFLOP/s of `nn.Linear(K, K)` on M rows (median of interleaved rounds; higher is better). "
              "`kiln` takes the packed TIR kernel or the library by its rule; `*-int8` columns are W8A8 "
              "dynamic (paths of the Kiln columns in the last column)."), "",
             "| M | N = K | " + " | ".join(systems) + " | kiln's paths |",
             "|---|---|" + "---|" * len(systems) + "---|"]
    for row in table:
        cells = []
        for s in systems:
            c = row["cells"].get(s, {})
            cells.append(f"{c['gflops']:.0f}" if "gflops" in c else c.get("error", "-")[:67])
        paths = [row["cells"].get(s, {}).get("path", "").split(",")[0] for s in systems if s.startswith("kiln")]
        path = "; ".join(p for p in paths if p) or "-"
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
    parser.add_argument("--quick", action="store_true", help="one tiny problem (M=7, N=K=64), 1 round: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.sizes, args.rounds = [7], [64], 1
        if args.update_results:
            parser.error("--quick results are a smoke test; they do not go into the committed results")
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
