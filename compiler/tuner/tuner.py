"""`kiln tune`: tune every TIR kernel of a model and store the winners in the cache.

Kernels are tuned largest share of modeled time first, so a time budget that runs out
leaves the small kernels at their defaults. Winners are stored at the end, after the
model-level check (`model_check.py`) has confirmed that together they make the model
faster; an interrupted run stores nothing. A kernel whose key already has a record in
the cache is skipped (another run, or another model with the same kernel, tuned it).
Each record is written through the `CacheClient` (the service and the local cache) as
`{target, config, latency_s, meta}`; every measurement goes to the training set
(`dataset.py`) whether it won or failed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch

from compiler.tuner.dataset import TrainingSet
from compiler.tuner.kernels import KernelTask, collect_tasks
from compiler.tuner.measure import MeasureResult, MeasureWorker
from compiler.tuner.search import Deadline, KernelResult, SearchOptions, make_measure, search_kernel

TUNER_NAME = "kiln-optuna-tpe"


@dataclass(frozen=True)
class TuneOptions:
    target: str = "tvm"
    pipeline: str | None = None  # None: the target's own, as `kiln compile` uses
    search: SearchOptions = field(default_factory=SearchOptions)
    time_budget_s: float | None = None
    retune: bool = False  # tune kernels that already have a record
    max_kernels: int | None = None
    work_dir: Path | None = None  # training set, cost model, worker logs; None: user cache dir
    use_cost_model: bool = True  # screen with the learned model when one has been trained
    progress: bool = True
    # Build the model with the winners and without; store them only if it got faster
    # by `model_min_gain` (model_check.py), else store the defaults.
    model_check: bool = True
    model_min_gain: float = 0.01
    faults: Mapping[int, str] = field(default_factory=dict)  # test hook: job index -> fault

    def resolved_work_dir(self) -> Path:
        if self.work_dir is not None:
            return self.work_dir
        from compiler.service.config import user_cache_dir

        return user_cache_dir() / "tuning"


@dataclass
class TuneReport:
    model: str
    target: str
    kernels: list[dict[str, Any]]
    seconds: float
    measurements: int
    failed: int
    worker_starts: int
    cost_model: str | None
    budget_exhausted: bool
    model_check: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cost_model_path(work_dir: Path) -> Path:
    return work_dir / "cost_model.json"


def training_set(work_dir: Path) -> TrainingSet:
    return TrainingSet(work_dir / "records.jsonl")


def tune_model(
    model: torch.nn.Module, inputs: Sequence[Any], client: Any, options: TuneOptions | None = None,
    name: str | None = None,
) -> TuneReport:
    """Tune `model`'s kernels; `client` is a `CacheClient` (reads what is known, stores winners)."""
    from backends.tvm.target import cpu_target

    options = options or TuneOptions()
    if options.target != "tvm":
        raise ValueError(
            f"kiln tune supports --target tvm; {options.target!r} kernels have no timing on this machine"
        )
    start = time.monotonic()
    name = name or type(model).__name__
    target = str(cpu_target())
    work_dir = options.resolved_work_dir()
    tasks = collect_tasks(model, inputs, name, target, options.pipeline)
    if options.max_kernels is not None:
        tasks = tasks[: options.max_kernels]
    ranker, ranker_name = _load_ranker(work_dir, options)
    dataset = training_set(work_dir)
    deadline = Deadline(options.time_budget_s)
    rows: list[dict[str, Any]] = []
    pending: dict[str, tuple[KernelResult, Any]] = {}  # key -> (result, record to store)
    counts = {"measurements": 0, "failed": 0}

    def on_job(task: KernelTask, configs: list[dict[str, int]], phase: str, out: MeasureResult) -> None:
        for config, latency in zip(configs, out.latencies):
            counts["measurements"] += 1
            counts["failed"] += latency is None
            dataset.append({
                "key": task.key, "workload": task.workload, "ops": task.ops, "target": target,
                "features": task.features, "config": config, "latency_s": latency,
                "error": out.error, "phase": phase, "host": platform.node(), "time": time.time(),
            })

    with _Progress(options.progress, len(tasks)) as progress, \
            MeasureWorker(work_dir / "logs") as worker:
        measure = make_measure(worker, options.search, options.faults.get, on_job)
        for task in tasks:
            cached = None if options.retune else client.get(task.key)
            if cached is not None and cached.measured_for(target):
                rows.append(_row(task, None, "cached", cached.config, cached.latency_s))
                progress.kernel_done(task, None)
                continue
            if deadline.expired():
                rows.append(_row(task, None, "skipped: time budget spent"))
                progress.kernel_done(task, None)
                continue
            progress.start_kernel(task, options.search.trials)
            result = search_kernel(task, measure, options.search, ranker, deadline, progress.on_trial)
            if result.best_s is not None:
                pending[task.key] = (result, _record(result, target, ranker_name, options.target))
                status = "defaults best" if result.best_config == result.default_config else "tuned"
                rows.append(_row(task, result, status, result.best_config, result.best_s))
            else:
                rows.append(_row(task, result, f"failed: {result.note}"))
            progress.kernel_done(task, result)
        starts = worker.starts
    check = _check_and_store(model, inputs, client, pending, rows, options)
    return TuneReport(
        name, target, rows, time.monotonic() - start, counts["measurements"], counts["failed"],
        starts, ranker_name, deadline.expired(), check,
    )


def _check_and_store(model, inputs, client, pending, rows, options: TuneOptions) -> dict[str, Any]:
    """Store this run's winners, or their defaults when the model is not faster with them."""
    from compiler.service.client import Record
    from compiler.tuner.model_check import check_model

    changed = {k for k, (result, _) in pending.items() if result.best_config != result.default_config}
    check: dict[str, Any] = {}
    if options.model_check and changed:
        try:
            check = check_model(model, inputs, {k: rec for k, (_, rec) in pending.items()}, client,
                                options.pipeline, options.search.threads)
        except Exception as err:  # noqa: BLE001 - the winners were each built and run already
            check = {"error": f"{type(err).__name__}: {err}"[:300]}
        if "tuned_s" in check:
            check["accepted"] = check["tuned_s"] <= check["untuned_s"] * (1 - options.model_min_gain)
            if not check["accepted"]:
                note = (f"model check: {check['tuned_s'] * 1e3:.3f} ms with the winners against "
                        f"{check['untuned_s'] * 1e3:.3f} ms without; defaults kept")
                for key in changed:
                    result, record = pending[key]
                    meta = {**record.meta, "note": note, "rejected_config": record.config}
                    pending[key] = (result, Record(record.target, dict(result.default_config), result.baseline_s, meta))
                for row in rows:
                    if row["key"] in changed:
                        row.update(status="rejected by model check", config=dict(pending[row["key"]][0].default_config),
                                   latency_s=row["baseline_s"], note=note)
    for key, (_, record) in pending.items():
        client.put(key, record)
    return check


def _record(result: KernelResult, target: str, ranker_name: str | None, name: str = "tvm"):
    """The record under the target's user name (`tvm`: `GET /v1/records?target=tvm` lists
    it); the full TVM target string stays in the key and in `meta["target"]`."""
    from compiler.service.client import Record

    meta = {
        "target": target,
        "baseline_latency_s": result.baseline_s,
        "speedup": result.speedup,
        "trials": result.measured,
        "failed": result.failed,
        "tuner": TUNER_NAME,
        "screened_by": ranker_name or "none",
        "workload": result.task.workload,
        "ops": result.task.ops[:200],
        "note": result.note,
        "host": platform.node(),
    }
    return Record(name, dict(result.best_config), float(result.best_s), meta)  # type: ignore[arg-type]


def _row(task: KernelTask, result: KernelResult | None, status: str, config: dict | None = None,
         latency: float | None = None) -> dict[str, Any]:
    return {
        "kernel": task.label,
        "key": task.key,
        "ops": task.ops,
        "count": task.count,
        "share_us": task.share_s * 1e6,
        "status": status,
        "config": config,
        "latency_s": latency,
        "baseline_s": result.baseline_s if result else None,
        "speedup": result.speedup if result else None,
        "trials": result.measured if result else 0,
        "failed": result.failed if result else 0,
        "note": result.note if result else "",
        "tune_s": result.seconds if result else 0.0,
    }


def _load_ranker(work_dir: Path, options: TuneOptions) -> tuple[Any, str | None]:
    if not options.use_cost_model:
        return None, None
    path = cost_model_path(work_dir)
    if not path.exists():
        return None, None
    from cost_models.learned import LearnedCostModel, ModelFormatError

    try:
        model = LearnedCostModel.load(path)
    except ModelFormatError:
        return None, None
    return model, f"learned v{model.meta.get('version')} ({model.meta.get('kernels')} kernels)"


def train_cost_model(work_dir: Path, target: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Train on every measurement in the training set, judge it held-out, save it."""
    from cost_models.learned import LearnedCostModel, evaluate

    samples = training_set(work_dir).samples(target)
    metrics = evaluate(samples, folds=5, seed=seed, by="kernel")
    model = LearnedCostModel.fit(samples, seed=seed)
    model.meta["held_out"] = metrics
    path = model.save(cost_model_path(work_dir))
    return {"path": str(path), "samples": len(samples), **metrics}


class _Progress:
    """Kernels done, trials of the current kernel, best speedup so far (rich)."""

    def __init__(self, enabled: bool, kernels: int) -> None:
        self.enabled = enabled
        self.kernels = kernels
        self.bar = None
        self.best = 1.0

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False,
            )
            self.bar.start()
            self.all = self.bar.add_task("kernels", total=self.kernels, info="")
            self.one = self.bar.add_task("trials", total=1, info="", visible=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start_kernel(self, task: KernelTask, trials: int) -> None:
        if self.bar is not None:
            self.bar.reset(self.one, total=trials, visible=True,
                           description=f"  {task.label} ({task.ops[:40]})", info="")

    def on_trial(self, trial: Any, result: KernelResult) -> None:
        if self.bar is None or trial.phase == "confirm":
            return
        speedup = (result.baseline_s / trial.latency_s) if result.baseline_s and trial.latency_s else None
        if speedup:
            self.best = max(self.best, speedup)
        kernel_best = max((result.baseline_s / t.latency_s for t in result.trials
                           if t.latency_s and result.baseline_s), default=1.0)
        self.bar.update(self.one, completed=result.measured,
                        info=f"best x{kernel_best:.2f}, failed {result.failed}")
        self.bar.update(self.all, info=f"best kernel speedup so far x{self.best:.2f}")

    def kernel_done(self, task: KernelTask, result: KernelResult | None) -> None:
        if self.bar is not None:
            self.bar.advance(self.all)
