"""Tuning one kernel: Optuna proposes, the cost model screens, the worker measures.

1. The defaults are measured first (the baseline, and Optuna's first observation).
2. Each round Optuna's TPE sampler (seeded per kernel, so a run is repeatable) proposes up
   to `screen` distinct new configurations from the kernel's own search space
   (`knob_space.KernelKnobs`: only values that can change this kernel's code, each
   proposal canonicalized); the learned cost model orders them and only the first
   `measure_per_round` are measured. Without a trained model the order is Optuna's own
   (no better than random among its proposals). Proposals not measured are told to
   Optuna as failed, so they inform nothing; one that compiles to code already measured
   (same scheduled PrimFunc) is answered from that record without measuring again.
3. Measured values (seconds) go back to Optuna; a failed or timed-out candidate is told
   as failed and recorded as such.
4. The best few and the baseline are measured once more, interleaved in one job, and the
   winner must beat the baseline by `min_gain` there; otherwise the defaults stay. On a
   shared, noisy machine that is what keeps a lucky sample from becoming a "tuned" config.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.tvm.knob_space import KernelKnobs
from backends.tvm.knobs import config_id
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
    # what precedes each timed call (`measure.MeasureJob.context`): "library-call" as in a
    # model, or "isolated" (tests that exercise the worker, not the labels)
    context: str = "library-call"


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
    default_config: dict[str, int] = field(default_factory=dict)  # what an untuned build uses

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
    space = kernel_space(task, options.threads)
    values = space.values
    default = space.default  # the kernel's own (a packed linear's tile is the rule's)
    result = KernelResult(task, None, default, None, default_config=default)
    seen: dict[str, TrialRecord] = {}  # by configuration
    seen_code: dict[str, TrialRecord] = {}  # by the code it compiles to

    def record(config: dict[str, int], phase: str, candidates: int) -> TrialRecord:
        out = measure(task, [config], phase, 0)
        trial = TrialRecord(config, out.latencies[0], out.error, phase, candidates)
        seen[config_id(config)] = seen_code[space.code_id(config)] = trial
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
    distributions = {n: optuna.distributions.CategoricalDistribution(c) for n, c in values.items()}
    rng = random.Random(sampler_seed)
    idle_rounds = 0
    while result.measured < options.trials and not deadline.expired() and idle_rounds < 8:
        proposals: list[tuple[Any, dict[str, int]]] = []
        batch: set[str] = set()
        asks = 0
        while len(proposals) < options.screen and asks < 3 * options.screen:
            trial = study.ask()
            asks += 1
            config = space.canonical({n: trial.suggest_categorical(n, c) for n, c in values.items()})
            ident = config_id(config)
            if ident in seen:  # measured before: answer from the record, measure nothing
                _tell(study, trial, seen[ident])
            elif ident in batch:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                batch.add(ident)
                proposals.append((trial, config))
        # Once TPE has settled it keeps proposing what it measured; the rest of the batch
        # is then drawn at random from what is still unmeasured.
        for config in _sample(space, values, rng, options.screen - len(proposals), seen.keys() | batch):
            proposals.append((None, config))  # told to Optuna only if measured
        if not proposals:
            break  # every configuration has been measured
        order = ranker.rank(task.features, [c for _, c in proposals]) if ranker else range(len(proposals))
        measured_now = 0
        for i in order:
            trial, config = proposals[i]
            want = measured_now < options.measure_per_round and result.measured < options.trials
            if want and not deadline.expired():
                code = space.code_id(config)
                if code in seen_code:  # the same code as a measured config: no measurement
                    seen[config_id(config)] = seen_code[code]
                    if trial is not None:
                        _tell(study, trial, seen_code[code])
                    continue
                measured = record(config, "search", len(proposals))
                measured_now += 1
                if trial is not None:
                    _tell(study, trial, measured)
                elif measured.latency_s is not None and all(config[n] in c for n, c in values.items()):
                    study.add_trial(optuna.trial.create_trial(
                        params=config, distributions=distributions, value=measured.latency_s))
            elif trial is not None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # screened out
        idle_rounds = 0 if measured_now else idle_rounds + 1
    _confirm(task, measure, options, result, default)
    result.seconds = time.monotonic() - start
    return result


def kernel_space(task: KernelTask, threads: int) -> KernelKnobs:
    """The kernel's own search space; without its PrimFunc (or when reading it fails), the
    table's values with serial configurations merged by the kernel's size alone."""
    if task.knob_space is not None:
        try:
            return task.knob_space(threads)
        except Exception as err:  # noqa: BLE001 - tune with the table rather than not at all
            warnings.warn(f"kiln tune: {task.label}: no per-kernel knob space ({err}); using the table's",
                          RuntimeWarning, stacklevel=2)
    return KernelKnobs.static(threads, int(2.0 ** task.features.get("log2_work", 62)))


def _sample(space: KernelKnobs, values: dict[str, tuple[int, ...]], rng: random.Random, n: int,
            exclude: set[str]) -> list[dict[str, int]]:
    """Up to `n` canonical configurations drawn uniformly, none of them in `exclude`."""
    out: dict[str, dict[str, int]] = {}
    for _ in range(20 * max(n, 0)):
        if len(out) >= n:
            break
        config = space.canonical({name: rng.choice(choices) for name, choices in values.items()})
        ident = config_id(config)
        if ident not in exclude:
            out.setdefault(ident, config)
    return list(out.values())


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
            rounds=rounds or 7, context=options.context, fault=fault_for(index) if fault_for else None,
        )
        out = worker.measure(job, options.timeout_s * (1 + 0.5 * (len(configs) - 1)))
        if on_job is not None:
            on_job(task, configs, phase, out)
        return out

    return measure
