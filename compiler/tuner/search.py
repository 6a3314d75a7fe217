"""Tuning one kernel: Optuna proposes, the cost model screens, the worker measures.

1. The defaults are measured first (the baseline, and Optuna's first observation).
2. Each round Optuna's TPE sampler (seeded per kernel, so a run is repeatable) proposes up
   to `screen` distinct new configurations; the learned cost model orders them and only
   the first `measure_per_round` are measured. Without a trained model the order is
   Optuna's own (no better than random among its proposals). Proposals not measured are
   told to Optuna as failed, so they inform nothing; one already measured is answered
   from the record without measuring again.
3. Measured values (seconds) go back to Optuna; a failed or timed-out candidate is told
   as failed and recorded as such.
4. The best few and the baseline are measured once more, interleaved in one job, and the
   winner must beat the baseline by `min_gain` there; otherwise the defaults stay. On a
   shared, noisy machine that is what keeps a lucky sample from becoming a "tuned" config.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.tvm.knobs import (
    all_configs,
    canonical,
    config_id,
    default_config,
    knob_values,
    stays_serial,
)
from compiler.tuner.kernels import KernelTask
from compiler.tuner.measure import MeasureJob, MeasureResult, MeasureWorker


@dataclass(frozen=True)
class SearchOptions:
    trials: int = 12  # measured configurations per kernel, the baseline included
    screen: int = 8  # proposals per measured candidate; the cost model picks among them
    measure_per_round: int = 1
    confirm_top: int = 2  # candidates re-measured against the baseline at the end
    confirm_rounds: int = 9
    min_gain: float = 0.03  # a winner must be this much faster than the defaults
    timeout_s: float = 60.0
    seed: int = 0
    threads: int = 2
    startup_trials: int = 3  # TPE's random start


@dataclass
class TrialRecord:
    config: dict[str, int]
    latency_s: float | None
    error: str | None
    phase: str  # "baseline" | "search" | "confirm"
    candidates: int = 1  # how many proposals it was chosen from


@dataclass
class KernelResult:
    task: KernelTask
    baseline_s: float | None
    best_config: dict[str, int]
    best_s: float | None
    trials: list[TrialRecord] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0

    @property
    def measured(self) -> int:
        return sum(1 for t in self.trials if t.phase != "confirm")

    @property
    def failed(self) -> int:
        return sum(1 for t in self.trials if t.error is not None)

    @property
    def speedup(self) -> float | None:
        if self.baseline_s and self.best_s:
            return self.baseline_s / self.best_s
        return None


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


Measure = Callable[[KernelTask, list[dict[str, int]], str, int], MeasureResult]


def search_kernel(
    task: KernelTask,
    measure: Measure,
    options: SearchOptions,
    ranker: Any = None,
    deadline: Deadline | None = None,
    on_trial: Callable[[TrialRecord, KernelResult], None] | None = None,
) -> KernelResult:
    """Tune `task`; `measure(task, configs, phase, rounds)` runs one job in the worker."""
    import optuna

    start = time.monotonic()
    deadline = deadline or Deadline(None)
    values = knob_values(options.threads)
    default = default_config(options.threads)
    result = KernelResult(task, None, default, None)
    seen: dict[str, TrialRecord] = {}

    def record(config: dict[str, int], phase: str, candidates: int) -> TrialRecord:
        out = measure(task, [config], phase, 0)
        trial = TrialRecord(config, out.latencies[0], out.error, phase, candidates)
        seen[config_id(config)] = trial
        result.trials.append(trial)
        if on_trial is not None:
            on_trial(trial, result)
        return trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_seed = (options.seed * 1_000_003 + int(task.key[:8], 16)) % 2**32
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=options.startup_trials)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(default)
    first = study.ask()
    for name, choices in values.items():
        first.suggest_categorical(name, choices)
    baseline = record(default, "baseline", 1)
    _tell(study, first, baseline)
    if baseline.latency_s is None:
        result.note = f"the defaults failed to measure: {baseline.error}"
        result.seconds = time.monotonic() - start
        return result
    result.baseline_s = result.best_s = baseline.latency_s
    space = all_configs(options.threads)
    distributions = {n: optuna.distributions.CategoricalDistribution(c) for n, c in values.items()}
    rng = random.Random(sampler_seed)
    while result.measured < options.trials and not deadline.expired():
        proposals: list[tuple[Any, dict[str, int]]] = []
        batch: set[str] = set()
        asks = 0
        while len(proposals) < options.screen and asks < 3 * options.screen:
            trial = study.ask()
            asks += 1
            config = _effective(
                canonical({n: trial.suggest_categorical(n, c) for n, c in values.items()}, options.threads),
                task, default,
            )
            ident = config_id(config)
            if ident in seen:  # measured before: answer from the record, measure nothing
                _tell(study, trial, seen[ident])
            elif ident in batch:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                batch.add(ident)
                proposals.append((trial, config))
        # Once TPE has settled it keeps proposing what it measured; in a space this small
        # the rest of the batch is then drawn at random from what is still unmeasured.
        fresh = list({config_id(e): e for e in (_effective(c, task, default) for c in space)}.values())
        fresh = [c for c in fresh if config_id(c) not in seen and config_id(c) not in batch]
        for config in rng.sample(fresh, min(len(fresh), options.screen - len(proposals))):
            proposals.append((None, config))  # told to Optuna only if measured
        if not proposals:
            break  # every configuration has been measured
        order = ranker.rank(task.features, [c for _, c in proposals]) if ranker else range(len(proposals))
        order = list(order)
        chosen = order[: options.measure_per_round]
        for i in order:
            trial, config = proposals[i]
            if i in chosen and result.measured < options.trials and not deadline.expired():
                measured = record(config, "search", len(proposals))
                if trial is not None:
                    _tell(study, trial, measured)
                elif measured.latency_s is not None:
                    study.add_trial(optuna.trial.create_trial(
                        params=config, distributions=distributions, value=measured.latency_s))
            elif trial is not None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # screened out
    _confirm(task, measure, options, result, default)
    result.seconds = time.monotonic() - start
    return result


def _effective(config: dict[str, int], task: KernelTask, default: dict[str, int]) -> dict[str, int]:
    """The serial configuration when `config` keeps this kernel serial anyway.

    The CPU rules parallelize a block only when its work reaches the threshold; a
    threshold above any block's possible work emits the same code as one thread, which
    need not be measured twice.
    """
    iterations = int(2.0 ** task.features.get("log2_work", 62))
    if config.get("num_threads", 1) > 1 and stays_serial(config, iterations):
        return {**default, "num_threads": 1}
    return config


def _tell(study: Any, trial: Any, record: TrialRecord) -> None:
    import optuna

    if record.latency_s is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, record.latency_s)


def _confirm(
    task: KernelTask, measure: Measure, options: SearchOptions, result: KernelResult,
    default: dict[str, int],
) -> None:
    """Re-measure the best candidates and the defaults interleaved; keep a clear winner."""
    good = [t for t in result.trials if t.latency_s is not None and t.phase != "confirm"]
    ranked = sorted(good, key=lambda t: t.latency_s)  # type: ignore[arg-type, return-value]
    contenders = [t.config for t in ranked if t.config != default][: options.confirm_top]
    if not contenders:
        result.best_config, result.best_s = default, result.baseline_s
        result.note = "no configuration beat the defaults"
        return
    configs = [default, *contenders]
    out = measure(task, configs, "confirm", options.confirm_rounds)
    if not out.ok:
        result.best_config, result.best_s = default, result.baseline_s
        result.note = f"confirmation failed ({out.error}); keeping the defaults"
        return
    for config, latency in zip(configs, out.latencies):
        result.trials.append(TrialRecord(config, latency, None, "confirm"))
    base = out.latencies[0]
    best = min(range(len(configs)), key=lambda i: out.latencies[i])  # type: ignore[arg-type, return-value]
    result.baseline_s = base
    if best != 0 and out.latencies[best] <= base * (1 - options.min_gain):  # type: ignore[operator]
        result.best_config, result.best_s = configs[best], out.latencies[best]
    else:
        result.best_config, result.best_s = default, base
        result.note = f"no configuration beat the defaults by {options.min_gain:.0%} on re-measurement"


def make_measure(
    worker: MeasureWorker, options: SearchOptions, fault_for: Callable[[int], str | None] | None = None,
    on_job: Callable[[KernelTask, list[dict[str, int]], str, MeasureResult], None] | None = None,
) -> Measure:
    """The `measure` callable `search_kernel` takes, over one worker process."""
    counter = {"n": 0}

    def measure(task: KernelTask, configs: list[dict[str, int]], phase: str, rounds: int) -> MeasureResult:
        index = counter["n"]
        counter["n"] += 1
        job = MeasureJob(
            task.ir_text(), dict(task.program.params), configs, options.threads,
            rounds=rounds or 7, fault=fault_for(index) if fault_for else None,
        )
        out = worker.measure(job, options.timeout_s * (1 + 0.5 * (len(configs) - 1)))
        if on_job is not None:
            on_job(task, configs, phase, out)
        return out

    return measure
