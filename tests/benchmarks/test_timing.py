"""Tests for `benchmarks/timing.py`: statistics, round sizing and interleaving."""

from __future__ import annotations

import math

import pytest

from benchmarks.timing import (
    TimingOptions,
    TimingStats,
    calls_for_round,
    geomean,
    quantile,
    time_interleaved,
)


def test_stats_from_seconds_are_in_milliseconds() -> None:
    stats = TimingStats.from_seconds([0.003, 0.001, 0.002, 0.010])
    assert stats.median_ms == pytest.approx(2.5)
    assert stats.min_ms == pytest.approx(1.0)
    assert stats.samples == 4
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms


def test_stats_need_samples() -> None:
    with pytest.raises(ValueError):
        TimingStats.from_seconds([])


def test_quantile_interpolates() -> None:
    values = [0.0, 10.0, 20.0]
    assert quantile(values, 0.0) == 0.0
    assert quantile(values, 0.5) == 10.0
    assert quantile(values, 0.75) == 15.0
    assert quantile(values, 1.0) == 20.0


def test_geomean_skips_missing_and_non_positive() -> None:
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([2.0, None, 0.0, math.inf, 8.0]) == pytest.approx(4.0)
    assert geomean([]) is None


def test_round_size_follows_min_time_and_cap() -> None:
    opts = TimingOptions(calls=20, min_round_s=0.5, max_round_s=5.0)
    assert calls_for_round(1e-4, opts) == 5000  # fast: the 0.5 s floor decides
    assert calls_for_round(0.01, opts) == 50
    assert calls_for_round(0.1, opts) == 20  # the repeat count decides
    assert calls_for_round(1.0, opts) == 5  # slow: capped by 5 s per round
    assert calls_for_round(60.0, opts) == 1


def test_options_reject_zero_rounds() -> None:
    with pytest.raises(ValueError):
        TimingOptions(rounds=0)


def test_interleaving_rotates_order_and_counts_calls() -> None:
    log: list[str] = []
    fns = {name: (lambda name=name: log.append(name)) for name in "abc"}
    opts = TimingOptions(rounds=3, calls=2, warmup=1, min_round_s=0.0, settle_s=0.0)
    rounds_seen: list[int] = []
    stats = time_interleaved(fns, opts, on_round=rounds_seen.append)
    assert rounds_seen == [0, 1, 2]
    assert all(isinstance(s, TimingStats) and s.samples == 6 for s in stats.values())
    timed = log[3:]  # after one warmup call each
    firsts = [timed[i * 6] for i in range(3)]
    assert firsts == ["a", "b", "c"], "each round starts with the next system"
    orders = ["".join(timed[i * 6 : i * 6 + 6 : 2]) for i in range(3)]
    assert orders == ["abc", "bac", "cab"], "odd rounds reverse the others: c follows a, not b"


def test_a_failing_system_does_not_stop_the_others() -> None:
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("boom")

    opts = TimingOptions(rounds=3, calls=2, warmup=1, min_round_s=0.0)
    out = time_interleaved({"ok": lambda: None, "flaky": flaky, "dead": lambda: 1 / 0}, opts)
    assert isinstance(out["ok"], TimingStats) and out["ok"].samples == 6
    assert isinstance(out["flaky"], RuntimeError)
    assert isinstance(out["dead"], ZeroDivisionError)
    assert list(out) == ["ok", "flaky", "dead"]


def test_a_round_stops_at_max_round_s_even_when_calls_slow_down() -> None:
    """Sized from a fast warmup, then every call stalls (a busy machine): the round ends
    after max_round_s, not after the planned number of calls."""
    import time

    state = {"calls": 0}

    def slows_down() -> None:
        state["calls"] += 1
        if state["calls"] > 3:  # the warmup was fast
            time.sleep(0.02)

    opts = TimingOptions(rounds=2, calls=1, warmup=3, min_round_s=0.5, max_round_s=0.1)
    start = time.perf_counter()
    stats = time_interleaved({"slow": slows_down}, opts)["slow"]
    assert isinstance(stats, TimingStats)
    assert time.perf_counter() - start < 1.0  # planned: 2 rounds x 0.5 s / ~1 us = minutes
    assert 2 <= stats.samples <= 2 * 7 and len(stats.round_medians_ms) == 2
