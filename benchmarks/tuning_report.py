"""What tuning buys: tune the zoo, compare tuned with untuned Kiln/TVM, judge the learned model.

For each zoo model, in a fresh work directory (its own tuning cache, training set and
artifact caches, so nothing from an earlier run counts):

- cold: `tune_model` (the `kiln tune` path) then a compile that reads the winners;
- warm: a compile in a fresh artifact cache reading the same winners (what a teammate's
  `kiln compile` does after someone tuned): lookups only, no measurement;
- untuned: a compile with `use_tuned=False`;
- latency of eager, untuned and tuned Kiln, interleaved (benchmarks/timing.py).

After each model the learned cost model is retrained on everything measured so far, so
later models are screened by it. At the end the model is judged on held-out kernels
(5-fold by kernel) and held-out models (leave-one-model-out) against the roofline model.
`--metaschedule N` adds TVM MetaSchedule with the same trial budget on the N kernels
with the largest share (benchmarks/metaschedule_compare.py).

The headline geomean counts only models whose tuned configs differ from the defaults
(`tuned_differs`): where the model check rejected the winners, "tuned" and "untuned" run
the same program and their ratio is noise. Each ratio comes with its round-by-round range.

Usage: python -m benchmarks.tuning_report [--models mlp,gpt] [--trials 8] [--out DIR]
       python -m benchmarks.tuning_report --render benchmarks/results/tuning.json  (no measuring)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import TimingOptions, geomean, time_interleaved
from compiler import compile_model
from compiler.service.client import CacheClient
from compiler.tuner.search import SearchOptions
from compiler.tuner.tuner import TuneOptions, cost_model_path, training_set, tune_model
from cost_models.learned import LearnedCostModel, evaluate
from examples.zoo import ZOO


def tune_and_time(name: str, client: CacheClient, work: Path, options: TuneOptions) -> dict[str, Any]:
    model, inputs = ZOO[name]()
    start = time.perf_counter()
    report = tune_model(model, inputs, client, options, name=name)
    tune_s = time.perf_counter() - start
    cold = compile_model(model, inputs, tuning_cache=client, cache_dir=_fresh(work / f"art-cold-{name}"))
    cold_s = tune_s + cold.report["compile_s"]
    warm = compile_model(model, inputs, tuning_cache=client, cache_dir=_fresh(work / f"art-warm-{name}"))
    untuned = compile_model(model, inputs, use_tuned=False, cache_dir=_fresh(work / f"art-untuned-{name}"))

    def eager() -> object:
        with torch.inference_mode():
            return model(*inputs)

    stats = time_interleaved(
        {"eager": eager, "untuned": lambda: untuned(*inputs), "tuned": lambda: warm(*inputs)},
        TimingOptions(rounds=9, calls=20, warmup=3, min_round_s=0.3, max_round_s=2.0),
    )
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(_flat(warm(*inputs)), _flat(untuned(*inputs))))
    kernels = report.kernels
    ms = {k: v.median_ms for k, v in stats.items()}
    # untuned/tuned round by round (both timed in each round, under the same load): the
    # spread of repeated measurements of the one ratio the table reports
    ratio_rounds = [u / t for u, t in zip(stats["untuned"].round_medians_ms, stats["tuned"].round_medians_ms)]
    return {
        "model": name,
        "tir_kernels": len(kernels),
        "tuned_non_default": sum(k["status"] == "tuned" for k in kernels),
        "rejected_by_model_check": sum(k["status"] == "rejected by model check" for k in kernels),
        "defaults_best": sum(k["status"] == "defaults best" for k in kernels),
        "measurements": report.measurements,
        "failed": report.failed,
        "screened_by": report.cost_model or "none",
        "model_check": report.model_check,
        "kernel_speedups": [k["speedup"] for k in kernels if k["speedup"]],
        "tune_s": tune_s,
        "cold_compile_s": cold_s,
        "warm_compile_s": warm.report["compile_s"],
        "untuned_compile_s": untuned.report["compile_s"],
        "warm_tuning_hits": warm.report["tuning_hits"],
        "eager_ms": ms["eager"],
        "untuned_ms": ms["untuned"],
        "tuned_ms": ms["tuned"],
        "untuned_over_tuned": ms["untuned"] / ms["tuned"],
        "untuned_over_tuned_rounds": ratio_rounds,
        "max_abs_diff_tuned_vs_untuned": diff,
        "kernels": kernels,
    }


def tuned_differs(row: dict[str, Any]) -> bool:
    """Whether the tuned model runs other configs than the untuned one: some kernel has a
    non-default winner and the model check kept the winners (when it rejects them the
    defaults are stored, and "tuned" and "untuned" are the same program timed twice)."""
    return row["tuned_non_default"] > 0 and (row.get("model_check") or {}).get("accepted") is not False


def tuned_geomean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Geomean untuned/tuned over the models whose tuned configs differ, with the range of
    the round-by-round ratios (geomean of each model's lowest and highest round)."""
    counted = [r for r in rows if tuned_differs(r)]
    out: dict[str, Any] = {
        "geomean_models": [r["model"] for r in counted],
        "geomean_untuned_over_tuned": geomean([r["untuned_over_tuned"] for r in counted]),
    }
    spreads = [r.get("untuned_over_tuned_rounds") or [] for r in counted]
    if counted and all(spreads):
        out["geomean_round_range"] = [geomean([min(x) for x in spreads]), geomean([max(x) for x in spreads])]
    return out


def repeat_noise(work: Path) -> dict[str, float]:
    """How much one config's latency moves between two measurements (search vs confirm)."""
    seen: dict[tuple[str, str], list[float]] = {}
    for row in training_set(work).rows():
        if row.get("latency_s"):
            seen.setdefault((row["key"], json.dumps(row["config"], sort_keys=True)), []).append(row["latency_s"])
    ratios = sorted(max(v) / min(v) for v in seen.values() if len(v) > 1)
    if not ratios:
        return {}
    return {"pairs": len(ratios), "median_ratio": ratios[len(ratios) // 2],
            "p90_ratio": ratios[int(0.9 * (len(ratios) - 1))]}


def judge_cost_model(work: Path) -> dict[str, Any]:
    samples = training_set(work).samples()
    return {
        "repeat_noise": repeat_noise(work),
        "samples": len(samples),
        "kernels": len({s.group for s in samples}),
        "by_kernel": evaluate(samples, folds=5, by="kernel"),
        "by_model": evaluate(samples, folds=len({s.workload for s in samples}), by="workload"),
    }


def retrain(work: Path) -> None:
    samples = training_set(work).samples()
    if len({s.group for s in samples}) >= 3:
        LearnedCostModel.fit(samples).save(cost_model_path(work))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--time-budget", type=float, default=None, help="per model, seconds")
    parser.add_argument("--metaschedule", type=int, default=2, help="kernels to compare (0: skip)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: re-render an earlier run's tuning.json into --out")
    args = parser.parse_args(argv)
    if args.render is not None:
        return rerender(args.render, args.out)
    torch.set_num_threads(2)
    work = args.work or Path(tempfile.mkdtemp(prefix="kiln-tuning-"))
    tuning = work / "tuning"
    options = TuneOptions(
        search=SearchOptions(trials=args.trials), time_budget_s=args.time_budget,
        work_dir=tuning, progress=True,
    )
    rows = []
    with CacheClient(None, local_path=work / "cache.sqlite") as client:
        for name in args.models.split(","):
            rows.append(tune_and_time(name, client, work, options))
            retrain(tuning)
            _print_row(rows[-1])
    result: dict[str, Any] = {
        "host": platform.node(),
        "load_avg": os.getloadavg(),
        "trials_per_kernel": args.trials,
        "models": rows,
        **tuned_geomean(rows),
        "geomean_cold_over_warm_compile": geomean([r["cold_compile_s"] / r["warm_compile_s"] for r in rows]),
        "cost_model": judge_cost_model(tuning),
    }
    if args.metaschedule:
        from benchmarks.metaschedule_compare import compare

        result["metaschedule"] = compare(rows, tuning, args.trials, args.metaschedule)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps(result, indent=1, default=_json_default))
    markdown = render(result)
    (args.out / "tuning.md").write_text(markdown)
    print(markdown)
    return 0


def rerender(path: Path, out: Path) -> int:
    """Recompute the summary of an earlier run's rows by today's rules and render it."""
    result = json.loads(path.read_text())
    result.pop("geomean_round_range", None)
    result.update(tuned_geomean(result["models"]))
    result.setdefault("rendered_from", str(path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(result, indent=1, default=_json_default))
    (out / "tuning.md").write_text(render(result))
    print(render(result))
    return 0


def render(result: dict[str, Any]) -> str:
    load = result["load_avg"][0]
    lines = [
        (f"Tuning report ({result['trials_per_kernel']} measured configurations per kernel, "
         f"load average {load:.1f} on 2 cores{': a loaded machine' if load > 2 else ''})"),
        "",
        ("| model | TIR kernels | non-default winners | model check | measurements (failed) | eager ms "
         "| untuned ms | tuned ms | untuned/tuned | tune s | cold compile s | warm compile s | cold/warm |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["models"]:
        lines.append(
            f"| {r['model']} | {r['tir_kernels']} | {r['tuned_non_default']} | {_check(r['model_check'])} "
            f"| {r['measurements']} ({r['failed']}) "
            f"| {r['eager_ms']:.3f} | {r['untuned_ms']:.3f} | {r['tuned_ms']:.3f} | {_ratio(r)} "
            f"| {r['tune_s']:.0f} | {r['cold_compile_s']:.1f} | {r['warm_compile_s']:.1f} "
            f"| {r['cold_compile_s'] / r['warm_compile_s']:.0f}x |"
        )
    lines += ["", _geomean_line(result), "",
              (f"Geomean cold (tune + compile) / warm (compile from cache) time: "
               f"{result['geomean_cold_over_warm_compile']:.0f}x."), ""]
    cm = result["cost_model"]
    lines += [
        f"Learned cost model, {cm['samples']} measured configurations of {cm['kernels']} kernels, held out:",
        "",
        "| split | model | kernels judged | Spearman | top-1 recall | top-5 recall |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("by_kernel", "by_model"):
        for which in ("learned", "roofline"):
            m = cm[split][which]
            rho = "undefined (constant)" if m["spearman_defined"] == 0 else f"{m['spearman']:.3f}"
            lines.append(
                f"| {_split(cm[split])} | {which} | {m['kernels']} | {rho} | {m['top1_recall']:.3f} "
                f"| {m['top5_recall']:.3f} |"
            )
    if "withheld_lookalikes" not in cm["by_kernel"]:
        lines += ["", ("These learned-model figures and the noise line below come from a run made before two "
                       "fixes: its labels were kernel times net of the library call floored at 1e-9 s (now a "
                       "kernel within that call's noise gets no label), and its held-out folds did not yet "
                       "withhold kernels with a held-out kernel's features under another key.")]
    noise = cm.get("repeat_noise") or {}
    if noise:
        lines += ["", (f"Measurement noise: {noise['pairs']} configurations measured twice differ by a "
                       f"factor {noise['median_ratio']:.3f} at the median, {noise['p90_ratio']:.2f} at the 90th "
                       "percentile (the ceiling on any model's within-kernel ranking).")]
    lines += [
        "",
        ("The roofline model gives every configuration of a kernel the same time (no knob "
         "changes its FLOPs or bytes): its within-kernel Spearman is undefined and its top-k "
         "recall is that of a random pick. Across kernels (all records pooled) it reaches "
         f"Spearman {cm['by_kernel']['pooled_roofline_spearman']:.3f}."),
    ]
    if "metaschedule" in result:
        from benchmarks.metaschedule_compare import render as render_ms

        lines += ["", *render_ms(result["metaschedule"])]
    return "\n".join(lines) + "\n"


def _split(split: dict[str, Any]) -> str:
    """The split's name, and how many training kernels it withheld as lookalikes of held-out ones."""
    withheld = split.get("withheld_lookalikes")
    return split["split"] if withheld is None else f"{split['split']} ({withheld} withheld)"


def _ratio(row: dict[str, Any]) -> str:
    rounds = row.get("untuned_over_tuned_rounds") or []
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if rounds else ""
    same = "" if tuned_differs(row) else ", same configs"
    return f"{row['untuned_over_tuned']:.3f}{spread}{same}"


def _geomean_line(result: dict[str, Any]) -> str:
    models = result.get("geomean_models") or []
    left = [r["model"] for r in result["models"] if r["model"] not in models]
    value = result.get("geomean_untuned_over_tuned")
    text = (f"Geomean untuned/tuned latency over the {len(models)} models whose tuned configs differ "
            f"from the defaults ({', '.join(models) or 'none'}): {'n/a' if value is None else f'{value:.3f}'}")
    if "geomean_round_range" in result:
        lo, hi = result["geomean_round_range"]
        text += f", round by round {lo:.3f}-{hi:.3f} (geomean of each model's lowest and highest round)"
    elif models:
        text += "; this run did not record the round-by-round spread"
    text += "."
    if left:
        text += (f" Not counted: {', '.join(left)} (no non-default winner kept: the model check rejected "
                 "the winners or the defaults won, so tuned and untuned ran the same configs and "
                 "their ratio is timing noise).")
    if "rendered_from" in result:
        text += (f" Summary recomputed by `python -m benchmarks.tuning_report --render` from the "
                 f"run's {Path(result['rendered_from']).name}; nothing was re-measured.")
    return text


def _check(check: dict[str, Any]) -> str:
    if "tuned_s" not in check:
        return check.get("error", "not needed")[:40]
    verdict = "kept" if check["accepted"] else "rejected"
    return f"{verdict} ({check['untuned_s'] * 1e3:.3f} -> {check['tuned_s'] * 1e3:.3f} ms)"


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['model']}: {row['tir_kernels']} kernels, untuned/tuned {row['untuned_over_tuned']:.3f}, "
        f"cold {row['cold_compile_s']:.1f} s, warm {row['warm_compile_s']:.1f} s", flush=True,
    )


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _flat(out: Any) -> list[torch.Tensor]:
    from torch.utils import _pytree as pytree

    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
