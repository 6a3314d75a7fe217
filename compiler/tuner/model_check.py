"""The model-level check: do a model's kernel winners make the model faster?

Each kernel is tuned on its own, right after a library call (`worker.library_call`), but
in the model its neighbours are other kernels too, and the knobs tuned here are mostly
about threads: whether TVM's pool is awake when a kernel forks depends on what ran
before it. Measured on the encoder: every kernel's winner beat its defaults alone, and
the model with all of them ran 1.5x slower, because the serial winners let TVM's worker
park and the one big parallel kernel left then paid the wake-up, twice a call. So before
the winners are stored, the model is built with them and without, and timed
interleaved; when the tuned model is not faster, the defaults are stored instead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


class PendingRecords:
    """A `CacheClient` look-alike: this run's winners first, then what the cache holds."""

    def __init__(self, pending: Mapping[str, Any], client: Any) -> None:
        self.pending = dict(pending)
        self.client = client

    def get(self, key: str) -> Any:
        return self.pending.get(key) or self.client.get(key)


def check_model(
    model: torch.nn.Module, inputs: Sequence[Any], pending: Mapping[str, Any], client: Any,
    pipeline: str | None = None, threads: int = 2, rounds: int = 9,
) -> dict[str, Any]:
    """Seconds per call of the model with the pending winners and with default knobs."""
    from compiler.driver import compile_model

    common = {"target": "tvm", "pipeline": pipeline, "use_cache": False, "num_threads": threads}
    tuned = compile_model(model, inputs, tuning_cache=PendingRecords(pending, client), **common)
    untuned = compile_model(model, inputs, use_tuned=False, **common)
    with torch.no_grad():
        times = time_pair(lambda: untuned(*inputs), lambda: tuned(*inputs), rounds)
    return {"untuned_s": times[0], "tuned_s": times[1], "tuned_kernels": tuned.report["tuned_kernels"]}


def time_pair(a: Callable[[], object], b: Callable[[], object], rounds: int, round_s: float = 0.05) -> tuple[float, float]:
    """Median over interleaved rounds (order alternating) of the mean call time."""
    fns = [a, b]
    calls = []
    for fn in fns:
        for _ in range(3):
            fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < round_s or n < 3:
            fn()
            n += 1
        calls.append(n)
    samples: list[list[float]] = [[], []]
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            start = time.perf_counter()
            for _ in range(calls[i]):
                fns[i]()
            samples[i].append((time.perf_counter() - start) / calls[i])
    return statistics.median(samples[0]), statistics.median(samples[1])
