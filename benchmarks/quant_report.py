"""Quantization report: every format on the zoo, and the ILP against uniform formats.

    python -m benchmarks.quant_report [--models mlp,cnn,encoder,gpt,moe]
        [--mode weight-only|weight-activation] [--formats int8,int4_g64,...]
        [--calibration-batches N] [--out benchmarks/results]

For each model: the weight bytes and relative output error (||y_q - y|| / ||y||, all
float outputs) of each format applied uniformly to every quantizable layer; then, for the
byte size of each uniform format, the error of the ILP's mixed choice at that budget, the
best uniform format that fits the same budget, and greedy's choice.

The headline errors are hold-out errors: two fresh input batches of the same shapes that
neither calibration nor the sensitivity measurement saw. Calibration (the zoo's example
inputs, plus N-1 fresh batches) is where sensitivities are measured, one layer quantized
at a time (passes/quantization.py), and where the ILP, greedy and the best uniform format
are chosen; its errors stand beside the hold-out ones and flatter every choice made on it.
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


HOLDOUT_SEEDS = (1, 2)
CALIBRATION_BATCHES = 1
CALIBRATION_SEED = 100  # fresh calibration batches use seeds 100, 101, ...: never a hold-out seed


def batches_for(inputs: Sequence[torch.Tensor], calibration_batches: int) -> tuple[list, list]:
    """(calibration, hold-out) batches: the example inputs plus fresh ones to calibrate and
    measure sensitivity on, and two other fresh batches that only judge the result."""
    calibration = [tuple(inputs)] + [holdout_like(inputs, CALIBRATION_SEED + i) for i in range(calibration_batches - 1)]
    holdout = [holdout_like(inputs, seed) for seed in HOLDOUT_SEEDS]
    for h in holdout:  # a hold-out batch equal to a calibration batch would not be held out
        if any(all(torch.equal(a, b) for a, b in zip(h, c)) for c in calibration):
            raise RuntimeError("a hold-out batch equals a calibration batch")
    return calibration, holdout


def model_report(name: str, mode: str, formats: Sequence[str], calibration_batches: int = 1) -> dict[str, Any]:
    model, inputs = ZOO[name]()
    program = capture(model, inputs)
    calibration, holdout = batches_for(inputs, calibration_batches)
    start = time.perf_counter()
    report = quantize_program(program, inputs, QuantizeOptions(mode=mode, formats=tuple(formats), materialize=False),
                              calibration=calibration, holdout=holdout)
    seconds = time.perf_counter() - start
    return {
        "model": name, "mode": mode, "seconds": seconds, "fp32_bytes": report.bytes_fp32,
        "sensitivity": report.sensitivity, "permuted_sites": report.permuted_sites,
        "calibration_batches": len(calibration), "holdout_batches": len(holdout),
        "uniform": report.uniform,
        "versus": report.versus, "chosen": {"bytes": report.bytes, "error": report.error,
                                            "holdout_error": report.holdout_error, "layers": report.layers},
    }


def _pct(value: float | None, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}%}"


TIE = 0.01  # errors within 1% (relative) of each other are a tie: 4.016% vs 4.017% is no win


def _lower(ours: float, theirs: float) -> str:
    return "yes" if ours < theirs * (1 - TIE) else "no" if ours > theirs * (1 + TIE) else "tie"


def wins(r: dict[str, Any]) -> tuple[int, int, int]:
    """(budgets where the ILP is lower on hold-out, lower on calibration, budgets); a
    difference within `TIE` is not a win."""
    versus = r["versus"]
    return (sum(_lower(v["ilp_holdout_error"], v["best_uniform_holdout_error"]) == "yes" for v in versus),
            sum(_lower(v["ilp_error"], v["best_uniform_error"]) == "yes" for v in versus), len(versus))


def markdown(results: list[dict[str, Any]]) -> str:
    first = results[0] if results else {}
    lines = [
        (f"Errors are relative L2 output errors against fp32. Headline columns are hold-out: "
         f"{first.get('holdout_batches', 2)} fresh input batches that neither calibration nor the "
         f"sensitivity measurement saw; calibration errors (the zoo's example inputs plus "
         f"{first.get('calibration_batches', 1) - 1} fresh batches, on which sensitivities were "
         "measured and the ILP, greedy and the best uniform format were chosen) stand beside them.\n"),
    ]
    for r in results:
        lines.append(f"### {r['model']} ({r['mode']}; fp32 weights {r['fp32_bytes']:,} B; "
                     f"sensitivity {r['sensitivity']}; {r['permuted_sites']} permuted sites; {r['seconds']:.1f} s)\n")
        lines.append("| format | weight bytes | bits/weight | error (hold-out) | error (calibration) |")
        lines.append("|---|---:|---:|---:|---:|")
        for u in r["uniform"]:
            lines.append(f"| {u['format']} | {u['bytes']:,} | {u['avg_bits']:.3f} | {_pct(u.get('holdout_error'))} "
                         f"| {_pct(u['error'])} |")
        lines.append("")
        lines.append("| budget = size of | budget B | ILP B | ILP hold-out | best uniform <= budget | its hold-out "
                     "| greedy hold-out | ILP lower (hold-out) | ILP calib | its calib | greedy calib "
                     "| ILP lower (calib) |")
        lines.append("|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---|")
        for v in r["versus"]:
            lines.append(
                f"| {v['uniform']} | {v['budget']:,} | {v['ilp_bytes']:,} | {_pct(v['ilp_holdout_error'])} "
                f"| {v['best_uniform']} | {_pct(v['best_uniform_holdout_error'])} | {_pct(v['greedy_holdout_error'])} "
                f"| {_lower(v['ilp_holdout_error'], v['best_uniform_holdout_error'])} "
                f"| {_pct(v['ilp_error'])} | {_pct(v['best_uniform_error'])} | {_pct(v['greedy_error'])} "
                f"| {_lower(v['ilp_error'], v['best_uniform_error'])} |")
        hold, calib, total = wins(r)
        lines.append("")
        lines.append(f"ILP lower than the best uniform format (by more than {TIE:.0%}) at {hold} of {total} "
                     f"budgets on hold-out data ({calib} of {total} on calibration data).")
        lines.append("")
    return "\n".join(lines)


SUMMARY_FORMATS = ("int8", "int4_g64", "fp8_e4m3", "mxfp8_e4m3", "mxint8", "mxfp4", "bfp6")
SUMMARY_BUDGETS = ("int8", "int4_g64", "mxfp6_e2m3")


def summary_markdown(results: list[dict[str, Any]]) -> str:
    """The README's two tables: uniform formats, and the ILP at three budgets (hold-out first)."""
    lines = [
        "Uniform formats, relative output error on hold-out inputs:",
        "",
        "| model | fp32 MB | " + " | ".join(SUMMARY_FORMATS) + " |",
        "|---|---:|" + "---:|" * len(SUMMARY_FORMATS),
    ]
    for r in results:
        by = {u["format"]: u for u in r["uniform"]}
        cells = [_pct(by[f].get("holdout_error"), 2) if f in by else "" for f in SUMMARY_FORMATS]
        lines.append(f"| {r['model']} | {r['fp32_bytes'] / 1e6:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        ("The ILP against the best uniform format that fits the same byte budget, and greedy; "
         "hold-out errors, with calibration errors (where each was chosen) beside them:"),
        "",
        "| model | budget = size of | ILP hold-out | best uniform that fits | its hold-out | greedy hold-out "
        "| ILP lower on hold-out | ILP calib | its calib |",
        "|---|---|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in results:
        for v in r["versus"]:
            if v["uniform"] not in SUMMARY_BUDGETS:
                continue
            lines.append(
                f"| {r['model']} | {v['uniform']} ({v['budget']:,} B) | {_pct(v['ilp_holdout_error'], 2)} "
                f"| {v['best_uniform']} | {_pct(v['best_uniform_holdout_error'], 2)} "
                f"| {_pct(v['greedy_holdout_error'], 2)} "
                f"| {_lower(v['ilp_holdout_error'], v['best_uniform_holdout_error'])} "
                f"| {_pct(v['ilp_error'], 2)} | {_pct(v['best_uniform_error'], 2)} |")
    lines += [
        "",
        (f"Over all {len(results[0]['versus']) if results else 0} budgets (the size of each uniform format), "
         f"how often the ILP is lower than the best uniform format that fits (within {TIE:.0%}: a tie):"),
        "",
        "| model | on hold-out | on calibration |",
        "|---|---:|---:|",
    ]
    for r in results:
        hold, calib, total = wins(r)
        lines.append(f"| {r['model']} | {hold} of {total} | {calib} of {total} |")
    return "\n".join(lines) + "\n"


def write(results: list[dict[str, Any]], out: Path, mode: str) -> str:
    text = markdown(results)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if mode == "weight-only" else "_wa"
    (out / f"quant_report{suffix}.md").write_text(text)
    (out / f"quant_report{suffix}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"quant_summary{suffix}.md").write_text(summary_markdown(results))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--mode", default="weight-only", choices=("weight-only", "weight-activation"))
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS))
    parser.add_argument("--calibration-batches", type=int, default=CALIBRATION_BATCHES,
                        help="the example inputs plus N-1 fresh batches to calibrate and measure sensitivity on")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: re-render an earlier run's quant_report.json into --out")
    args = parser.parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        print(write(results, args.out, results[0]["mode"] if results else args.mode))
        return 0
    results = []
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        results.append(model_report(name, args.mode, args.formats.split(","), args.calibration_batches))
    print(write(results, args.out, args.mode))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
