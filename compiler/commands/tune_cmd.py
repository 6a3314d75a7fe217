"""`kiln tune`: tune a zoo-style factory's kernels, store the winners, optionally train the model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from compiler.cli import fail


def run_tune(
    model_spec: str, target: str, trials: int, time_budget: float | None, cache_url: str | None,
    train: bool, pipeline: str | None, seed: int, timeout: float, retune: bool,
    no_cost_model: bool, as_json: bool, model_check: bool = True,
) -> None:
    from compiler.cli import warn
    from compiler.service.client import CacheClient, CacheServiceError, CacheURLError

    if target != "tvm":
        fail(f"kiln tune supports --target tvm only, got {target!r} "
             "(Triton knobs are declared, but timing them needs a GPU)")
    try:  # before the heavy imports: a bad --cache or a missing token is answered at once
        client = CacheClient.from_env(cache_url, on_fallback=warn)
        client.preflight(write=True)  # one request: a missing token fails now, not after tuning
    except (CacheURLError, CacheServiceError) as err:
        fail(str(err))
    from compiler.model_loader import ModelSpecError, load_model
    from compiler.tuner.search import SearchOptions
    from compiler.tuner.tuner import TuneOptions, train_cost_model, tune_model
    from passes import PipelineError, parse_pipeline

    if pipeline is not None:
        try:
            parse_pipeline(pipeline)
        except PipelineError as err:
            fail(str(err))
    try:
        model, inputs, name = load_model(model_spec)
    except ModelSpecError as err:
        fail(str(err))
    work_dir = os.environ.get("KILN_TUNE_DIR")  # the CLI entry is where the environment is read
    options = TuneOptions(
        target=target,
        pipeline=pipeline,
        search=SearchOptions(trials=trials, seed=seed, timeout_s=timeout),
        time_budget_s=time_budget,
        retune=retune,
        work_dir=Path(work_dir) if work_dir else None,
        use_cost_model=not no_cost_model,
        model_check=model_check,
        progress=not as_json and sys.stderr.isatty(),
    )
    with client:
        try:
            report = tune_model(model, inputs, client, options, name=name).as_dict()
        except CacheServiceError as err:  # e.g. 401: the service wants KILN_CACHE_TOKEN
            fail(f"storing a tuned record failed: {err}")
        report["cache"] = client.url or "local"
    if train:
        try:
            report["cost_model"] = train_cost_model(options.resolved_work_dir(), report["target"], seed)
        except ValueError as err:
            # Not a failed tune: the winners are stored. Tiny kernels measured within the
            # library call's noise get no label, so a short run may leave nothing to rank.
            warn(f"cost model not trained: {err}; the measurements are kept for the next run")
            report["cost_model_error"] = str(err)
    if as_json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
    else:
        print_report(report)


def print_report(report: dict[str, Any]) -> None:
    console = Console(markup=False)  # kernel names, errors and paths are printed verbatim
    table = Table(title=Text(f"kiln tune {report['model']} --target tvm ({report['cache']} cache)"))
    for column in ("kernel", "ops", "x", "status", "trials", "failed", "default us", "tuned us", "config"):
        table.add_column(column, overflow="fold")
    for row in report["kernels"]:
        table.add_row(*map(Text, (
            row["kernel"].split("/")[-1].removeprefix("kiln_"), row["ops"][:24], str(row["count"]),
            row["status"], str(row["trials"]), str(row["failed"]), _us(row["baseline_s"]),
            _us(row["latency_s"]), short_config(row["config"]),
        )))
    console.print(table)
    console.print("config: n = threads, m = min parallel work, c = chunks per thread", highlight=False)
    console.print(
        f"{len(report['kernels'])} kernels, {report['measurements']} measurements "
        f"({report['failed']} failed), {report['seconds']:.1f} s, screening: {report['cost_model'] or 'none'}"
        + (", time budget spent" if report["budget_exhausted"] else ""),
        highlight=False,
    )
    check = report.get("model_check") or {}
    if "tuned_s" in check:
        verdict = "kept" if check["accepted"] else "rejected, defaults stored"
        console.print(
            f"model check: {check['untuned_s'] * 1e3:.3f} ms with default knobs, "
            f"{check['tuned_s'] * 1e3:.3f} ms with the winners: {verdict}", highlight=False,
        )
    elif "error" in check:
        console.print(f"model check failed ({check['error']}); winners stored", highlight=False)
    model = report.get("cost_model")
    if isinstance(model, dict):
        learned, roof = model["learned"], model["roofline"]
        console.print(
            f"cost model: {model['samples']} samples, held out ({model['split']}): learned Spearman "
            f"{learned['spearman']:.3f}, top-1 {learned['top1_recall']:.2f}, top-5 {learned['top5_recall']:.2f}; "
            f"roofline top-1 {roof['top1_recall']:.2f}, top-5 {roof['top5_recall']:.2f} "
            f"(it gives every config of a kernel the same time); saved to {model['path']}",
            highlight=False,
        )


def short_config(config: dict[str, int] | None) -> str:
    """`n2 m512k c4` for num_threads=2, min_parallel_work=524288, chunks_per_thread=4."""
    if not config:
        return ""
    parts = []
    for name, value in config.items():
        text = f"{value // 1024}k" if value >= 1024 and value % 1024 == 0 else str(value)
        text = f"{value // (1 << 20)}M" if value >= 1 << 20 and value % (1 << 20) == 0 else text
        parts.append(f"{name[0]}{text}" if name in SHORT else f"{name}={value}")
    return " ".join(parts)


SHORT = ("num_threads", "min_parallel_work", "min_parallel_elems", "chunks_per_thread")


def _us(seconds: float | None) -> str:
    return f"{seconds * 1e6:.1f}" if seconds else ""
