"""Quantization report: every format on the zoo, and the ILP against uniform formats.

    python -m benchmarks.quant_report [--models mlp,cnn,encoder,gpt,moe]
        [--mode weight-only|weight-activation] [--formats int8,int4_g64,...]
        [--out benchmarks/results]

For each model: the weight bytes and relative output error (||y_q - y|| / ||y||, all
float outputs) of each format applied uniformly to every quantizable layer, on the
calibration inputs (the zoo's example inputs) and on hold-out inputs of the same shapes;
then, for the byte size of each uniform format, the error of the ILP's mixed choice at
that budget, the best uniform format that fits the same budget, and greedy's choice.
Sensitivities are measured (one layer quantized at a time); see passes/quantization.py.
Writes `quant_report.md` and `quant_report.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from examples.zoo import ZOO
from ir.program import Program
from passes.quantization import DEFAULT_FORMATS, QuantizeOptions, quantize_program


def capture(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> Program:
    plan = plan_partitions(from_model(model, inputs))
    parts = plan.partitions()
    if len(parts) != 1:
        raise RuntimeError(f"expected one partition, got {len(parts)}")
    return convert_nodes(parts[0], plan.consts, users_outside(parts[0])).program


def holdout_like(inputs: Sequence[torch.Tensor], seed: int) -> tuple[torch.Tensor, ...]:
    """Fresh inputs of the same shapes: normal floats, integers in the example's range, masks kept."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for x in inputs:
        if x.dtype.is_floating_point:
            out.append(torch.randn(x.shape, generator=g, dtype=x.dtype))
        elif x.dtype == torch.bool:
            out.append(x.clone())
        else:
            out.append(torch.randint(0, int(x.max()) + 1, x.shape, generator=g, dtype=x.dtype))
    return tuple(out)


def model_report(name: str, mode: str, formats: Sequence[str]) -> dict[str, Any]:
    model, inputs = ZOO[name]()
    program = capture(model, inputs)
    holdout = [holdout_like(inputs, 1), holdout_like(inputs, 2)]
    start = time.perf_counter()
    report = quantize_program(program, inputs, QuantizeOptions(mode=mode, formats=tuple(formats), materialize=False),
                              holdout=holdout)
    seconds = time.perf_counter() - start
    return {
        "model": name, "mode": mode, "seconds": seconds, "fp32_bytes": report.bytes_fp32,
        "sensitivity": report.sensitivity, "permuted_sites": report.permuted_sites,
        "uniform": report.uniform,
        "versus": report.versus, "chosen": {"bytes": report.bytes, "error": report.error,
                                            "holdout_error": report.holdout_error, "layers": report.layers},
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(f"### {r['model']} ({r['mode']}; fp32 weights {r['fp32_bytes']:,} B; "
                     f"sensitivity {r['sensitivity']}; {r['permuted_sites']} permuted sites; {r['seconds']:.1f} s)\n")
        lines.append("| format | weight bytes | bits/weight | error (calib) | error (hold-out) |")
        lines.append("|---|---:|---:|---:|---:|")
        for u in r["uniform"]:
            hold = u.get("holdout_error")
            lines.append(f"| {u['format']} | {u['bytes']:,} | {u['avg_bits']:.3f} | {u['error']:.3%} | "
                         f"{'' if hold is None else f'{hold:.3%}'} |")
        lines.append("")
        lines.append("| budget = size of | budget B | ILP B | ILP error | ILP hold-out | best uniform <= budget "
                     "| its error | greedy error | ILP lower |")
        lines.append("|---|---:|---:|---:|---:|---|---:|---:|---|")
        for v in r["versus"]:
            lines.append(f"| {v['uniform']} | {v['budget']:,} | {v['ilp_bytes']:,} | {v['ilp_error']:.3%} | "
                         f"{v.get('ilp_holdout_error', math.nan):.3%} | "
                         f"{v['best_uniform']} | {v['best_uniform_error']:.3%} | {v['greedy_error']:.3%} | "
                         f"{'yes' if v['ilp_wins'] else 'tie' if v['ilp_error'] == v['best_uniform_error'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--mode", default="weight-only", choices=("weight-only", "weight-activation"))
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    results = []
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        results.append(model_report(name, args.mode, args.formats.split(",")))
    text = markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.mode == "weight-only" else "_wa"
    (args.out / f"quant_report{suffix}.md").write_text(text)
    (args.out / f"quant_report{suffix}.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
