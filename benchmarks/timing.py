"""Interleaved latency measurement: every system is timed in every round, in rotating order.

On a shared two-core machine the noise (another process, frequency changes, a cache flush)
comes in bursts of seconds. Timing system A for ten seconds and then system B would charge a
burst to one of them only; interleaving short rounds spreads it over all of them, and the
median over all calls then ignores the stragglers. The order rotates each round, and every
other round runs the systems after the first in reverse: a rotation alone keeps the cyclic
order, so each system would always run right after the same neighbour (whose cache
footprint and spinning worker threads it inherits). Before each system's calls the round
pauses `settle_s`, so that the previous system's thread pools (ONNX Runtime's and
libgomp's workers spin after their work) are idle again: on the zoo `cnn`, Kiln timed
right after ONNX Runtime ran 0.48 ms where the same kernels (`kiln-library`) ran 0.35 ms.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TimingOptions:
    """How long to measure. A round times each system for at least `calls` calls and at
    least `min_round_s` seconds (so sub-millisecond models get enough samples), but no
    more than `max_round_s` seconds (so a very slow system cannot stall the run)."""

    rounds: int = 5
    calls: int = 20
    warmup: int = 3
    min_round_s: float = 0.5
    max_round_s: float = 5.0
    settle_s: float = 0.02  # pause before each system's calls in a round (module docstring)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.calls < 1 or self.warmup < 0:
            raise ValueError(f"need rounds >= 1, calls >= 1, warmup >= 0; got {self}")


@dataclass(frozen=True)
class TimingStats:
    """Per-call latency summary, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    samples: int
    # the median of each interleaved round: a ratio of two systems' round medians, round
    # by round, compares them under the same load (`kiln compile` shows that spread)
    round_medians_ms: tuple[float, ...] = ()

    @classmethod
    def from_seconds(cls, samples: list[float], rounds: list[list[float]] | None = None) -> TimingStats:
        if not samples:
            raise ValueError("no timing samples")
        ms = sorted(s * 1e3 for s in samples)
        return cls(
            median_ms=statistics.median(ms),
            p10_ms=quantile(ms, 0.10),
            p90_ms=quantile(ms, 0.90),
            min_ms=ms[0],
            samples=len(ms),
            round_medians_ms=tuple(statistics.median(r) * 1e3 for r in rounds or () if r),
        )


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty list."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def geomean(values: list[float]) -> float | None:
    """Geometric mean of the positive finite values; None when there are none."""
    good = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return statistics.geometric_mean(good) if good else None


def calls_for_round(estimate_s: float, options: TimingOptions) -> int:
    """Number of calls in one round for a system whose call takes about `estimate_s`."""
    estimate_s = max(estimate_s, 1e-7)
    wanted = max(options.calls, math.ceil(options.min_round_s / estimate_s))
    cap = max(1, math.floor(options.max_round_s / estimate_s))
    return max(1, min(wanted, cap))


def _time_calls(fn: Callable[[], object], n: int, max_s: float | None = None) -> list[float]:
    """n timed calls, or fewer when they pass `max_s` seconds in all: on a busy machine a
    call estimated at 0.2 ms can stall for 160 ms at an OpenMP barrier, and a round sized
    from the estimate would then run for minutes."""
    samples = []
    clock = time.perf_counter
    first = clock()
    for _ in range(n):
        start = clock()
        fn()
        end = clock()
        samples.append(end - start)
        if max_s is not None and end - first > max_s:
            break
    return samples


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    options: TimingOptions = TimingOptions(),
    on_round: Callable[[int], None] | None = None,
) -> dict[str, TimingStats | Exception]:
    """Time each zero-argument callable in `fns` over interleaved rounds.

    Each callable is warmed up first (`options.warmup` calls, which also gives the estimate
    used to size its rounds). The garbage collector is paused inside a round so a collection
    triggered by one system is not billed to another. A callable that raises is dropped from
    the later rounds and its exception is returned in its place: one broken system must not
    cost the measurements of the others.
    """
    results: dict[str, TimingStats | Exception] = {}
    per_round: dict[str, int] = {}
    for name, fn in fns.items():
        try:
            warm = _time_calls(fn, max(1, options.warmup))
        except Exception as exc:  # noqa: BLE001 - reported to the caller, not swallowed
            results[name] = exc
            continue
        per_round[name] = calls_for_round(min(warm), options)
    samples: dict[str, list[list[float]]] = {name: [] for name in per_round}
    for r in range(options.rounds):
        live = [name for name in per_round if name not in results]
        shift = r % len(live) if live else 0
        order = live[shift:] + live[:shift]
        if r % 2:  # the same first system, the others in reverse: other neighbours
            order = order[:1] + order[1:][::-1]
        for name in order:
            if options.settle_s > 0:
                time.sleep(options.settle_s)
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                samples[name].append(_time_calls(fns[name], per_round[name], options.max_round_s))
            except Exception as exc:  # noqa: BLE001
                results[name] = exc
            finally:
                if gc_was_enabled:
                    gc.enable()
        if on_round is not None:
            on_round(r)
    for name, rounds in samples.items():
        if name not in results:
            results[name] = TimingStats.from_seconds([t for r in rounds for t in r], rounds)
    return {name: results[name] for name in fns}
