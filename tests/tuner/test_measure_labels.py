"""Labels the tuner measures are honest: a kernel's time net of the library call before it is
kept only when it stands above that call's noise, never floored to a made-up 1e-9.

A floored label ranked a kernel lost in the noise as the fastest configuration there is,
in the search and in the learned model's training data alike. These tests feed the worker's
timing arithmetic hand-made rounds (no clock involved) and follow an unresolved
measurement through the search and the training set.
"""

from __future__ import annotations

import pytest

from compiler.tuner import worker
from compiler.tuner.dataset import TrainingSet
from compiler.tuner.measure import MeasureResult
from compiler.tuner.worker import RESOLVE_SHARE, net_of_context, time_kernels

US = 1e-6
ALONE = [100 * US, 101 * US, 130 * US, 100.5 * US, 160 * US]  # fastest 100, resolution 0.5 us


def test_a_kernel_above_the_noise_keeps_its_net_time():
    with_context = [[112 * US, 150 * US, 113 * US, 111 * US, 200 * US]]
    net = net_of_context(with_context, ALONE)
    assert net.context_s == 100 * US
    assert net.noise_s == pytest.approx(RESOLVE_SHARE * 100 * US)  # 5 us: above the 0.5 us resolution
    assert net.latencies[0] == pytest.approx(11 * US)  # fastest with, less fastest alone
    assert net.error() is None
    # per round, that round's own context subtracted, nothing floored
    assert net.rounds[0] == pytest.approx([12 * US, 49 * US, -17 * US, 10.5 * US, 40 * US])


def test_a_kernel_within_the_noise_has_no_label():
    with_context = [[103 * US, 104 * US, 140 * US, 103.5 * US, 150 * US], [99 * US] * 5]
    net = net_of_context(with_context, ALONE)
    assert net.latencies == [None, None]  # 3 us and -1 us are both below the 5 us noise
    message = net.error()
    assert message is not None and "within measurement noise" in message and "\n" not in message
    assert 1e-9 not in [v for r in net.rounds for v in r]


def test_the_noise_is_the_resolution_of_the_fastest_context_round():
    alone = [100 * US, 120 * US, 121 * US, 122 * US, 123 * US]  # second fastest 20 us slower
    net = net_of_context([[115 * US] * 5, [125 * US] * 5], alone)
    assert net.noise_s == pytest.approx(20 * US)
    assert net.latencies[0] is None and net.latencies[1] == pytest.approx(25 * US)


def test_time_kernels_reports_unresolved_configs_as_an_error(monkeypatch):
    fake = [[150 * US] * 3, [101 * US] * 3, [100 * US, 100.2 * US, 110 * US]]  # 2 kernels, context
    monkeypatch.setattr(worker, "_time_interleaved", lambda *a, **k: fake)
    latencies, rounds, error = time_kernels(["k1", "k2"], [], 3, 0.001, context=object())
    assert latencies[0] == pytest.approx(50 * US) and latencies[1] is None
    assert error is not None and "within measurement noise" in error
    assert len(rounds) == 2  # the context's own rounds are not reported as a kernel's
    # without a context call nothing is subtracted and nothing can be unresolved
    monkeypatch.setattr(worker, "_time_interleaved", lambda *a, **k: fake[:2])
    latencies, _, error = time_kernels(["k1", "k2"], [], 3, 0.001)
    assert latencies == [150 * US, 101 * US] and error is None


def test_an_unresolved_measurement_trains_nothing(tmp_path):
    data = TrainingSet(tmp_path / "records.jsonl")
    base = {"key": "k", "target": "tvm", "features": {"roofline_us": 1.0}, "workload": "w"}
    data.append({**base, "config": {"a": 1}, "latency_s": 2e-5, "error": None})
    data.append({**base, "config": {"a": 2}, "latency_s": None,
                 "error": "within measurement noise: kernel time after the library call is below 5 us"})
    samples = data.samples()
    assert [s.config for s in samples] == [{"a": 1}]


def test_the_search_keeps_the_defaults_when_they_cannot_be_resolved():
    """An unresolved baseline is a failed measurement: the kernel is left at its defaults,
    with the reason, instead of being 'tuned' against a 1e-9 s baseline."""
    from backends.tvm.knobs import default_config
    from compiler.tuner.kernels import KernelTask
    from compiler.tuner.search import SearchOptions, search_kernel

    task = KernelTask(
        key="ab" * 32, label="t/kiln_group_0", ops="add", program=None,  # type: ignore[arg-type]
        features={"log2_work": 20.0, "roofline_us": 1.0}, count=1, roofline_s=1e-6, workload="t",
    )
    jobs = []

    def measure(task, configs, phase, rounds):
        jobs.append(phase)
        return MeasureResult([None] * len(configs), "within measurement noise: below 5 us")

    result = search_kernel(task, measure, SearchOptions(trials=4))
    assert jobs == ["baseline"]
    assert result.best_config == default_config(2) and result.baseline_s is None
    assert "within measurement noise" in result.note
