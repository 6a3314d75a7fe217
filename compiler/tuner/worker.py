"""The measurement worker: `python -m compiler.tuner.worker`, driven by `measure.MeasureWorker`.

Reads `MeasureJob`s from stdin, builds the job's one-kernel program with each config
through the TVM backend (the same code path `kiln compile` takes, so what is timed is what
ships), checks the outputs against the reference interpreter, and times repeated calls:
the fastest of `rounds` rounds of the mean call time within a round, rounds of all the
job's configs interleaved. The fastest, not the median: on a shared 2-core machine other
processes only ever add time, and the same config measured twice differed by 5% at the
median and 70% at the 90th percentile with medians, far less with minima. Built kernels are kept for a few jobs, so the tuner's final
confirmation (the baseline against the winner, interleaved) does not rebuild them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

KEEP_BUILT = 16


def main() -> int:
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the toolchain prints goes to the log, not into the protocol
    from compiler.tuner.measure import recv, send

    warm_up_imports()
    send(protocol, "ready")
    built: OrderedDict[tuple[str, str], Any] = OrderedDict()
    while True:
        job = recv(sys.stdin.buffer)
        if job is None:
            return 0
        send(protocol, run_job(job, built))


def warm_up_imports() -> None:
    import torch  # noqa: F401
    import tvm  # noqa: F401

    import backends.tvm.backend  # noqa: F401
    from backends.tvm.library import register_library

    register_library()


def run_job(job, built: OrderedDict) -> Any:
    from compiler.tuner.measure import MeasureResult

    start = time.perf_counter()
    if job.fault == "crash":
        os._exit(3)
    if job.fault == "hang":
        time.sleep(1e6)
    try:
        if job.fault == "raise":
            raise RuntimeError("injected failure")
        program, args, expected = _prepare(job, built)
        build_start = time.perf_counter()
        kernels = [_kernel(job, program, config, built) for config in job.configs]
        build_s = time.perf_counter() - build_start
        if job.check:
            for config, kernel in zip(job.configs, kernels):
                _check(kernel(*args), expected, config)
        # torch's threads as `kiln compile` runs them beside kernels built for job.threads:
        # held at one while the kernels are parallel (backends/tvm/thread_policy.py)
        context = library_call(1 if job.threads > 1 else None) if job.context == "library-call" else None
        latencies, rounds, error = time_kernels(kernels, args, job.rounds, job.min_round_s, context)
    except Exception as err:  # noqa: BLE001 - a bad candidate is a result, not a crash
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        return MeasureResult([None] * len(job.configs), reason[:500], wall_s=time.perf_counter() - start)
    return MeasureResult(latencies, error, build_s, time.perf_counter() - start, rounds)


def _prepare(job, built: OrderedDict):
    import torch

    from ir.interpreter import run
    from ir.program import Program
    from ir.text import parse_module

    digest = hashlib.sha256(job.ir_text.encode()).hexdigest()
    cached = built.get((digest, ""))
    if cached is not None:
        return cached
    program = Program(parse_module(job.ir_text), dict(job.params))
    generator = torch.Generator().manual_seed(0)
    args = [_example(a.type, generator) for a in program.forward.body.block.args]
    expected = run(program, *args) if job.check else None
    _keep(built, (digest, ""), (program, args, expected))
    return program, args, expected


def _kernel(job, program, config: dict[str, int], built: OrderedDict):
    from backends.base import BuildOptions
    from backends.tvm.backend import TVMBackend
    from backends.tvm.knobs import config_id
    from compiler.tuner.configs import UniformConfigs

    digest = hashlib.sha256(job.ir_text.encode()).hexdigest()
    slot = (digest, config_id(config))
    if slot in built:
        built.move_to_end(slot)
        return built[slot]
    options = BuildOptions(cache_dir=None, num_threads=job.threads, kernel_configs=UniformConfigs(config))
    kernel = TVMBackend().build(program, options)
    _keep(built, slot, kernel)
    return kernel


def _keep(built: OrderedDict, slot, value) -> None:
    built[slot] = value
    while len(built) > KEEP_BUILT:
        built.popitem(last=False)


def _check(actual, expected, config) -> None:
    import torch

    for a, e in zip(actual, expected):
        if a.shape != e.shape or a.dtype != e.dtype:
            raise ValueError(f"config {config}: output {tuple(a.shape)} {a.dtype}, expected {tuple(e.shape)} {e.dtype}")
        if e.dtype.is_floating_point:
            scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
            if not torch.allclose(a, e, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
                err = float((a.double() - e.double()).abs().max())
                raise ValueError(f"config {config}: wrong result (max abs error {err:.3g})")
        elif not torch.equal(a, e):
            raise ValueError(f"config {config}: wrong result")


def library_call(threads: int | None):
    """A contraction as the library path runs it (a linear on `threads` of torch's pool;
    None: the threads torch has).

    In a Kiln model a TIR kernel runs between such calls, and that changes what it costs:
    TVM's pool worker has parked while torch's threads ran, so a kernel that forks pays
    a wake-up that a kernel timed in a tight loop of its own never sees. Measured here on
    mlp's GELU: 12 us parallel vs 19 us serial in a loop of its own, 22-34 us vs 17-19 us
    right after a linear. So each timed call is preceded by this call, whose own time is
    measured in the same rounds and subtracted (`net_of_context`). Under the thread plan
    a program whose kernels are parallel holds torch at one thread, so there the call runs
    on the calling thread alone (`run_job`).
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    x, w, b = torch.randn(8, 256), torch.randn(512, 256), torch.randn(512)
    out = torch.empty(8, 512)
    return lambda: torch._C._nn.linear(x, w, b, out=out)


def _time_interleaved(kernels, args, rounds: int, min_round_s: float, context=None) -> list[list[float]]:
    """Per kernel, `rounds` samples of seconds per call, the kernels' rounds interleaved.

    With a `context` call, each kernel call follows one context call, and the context alone
    is timed as one more entry, last: the samples are raw (see `net_of_context`)."""
    fns = [lambda k=k: k(*args) for k in kernels]
    if context is not None:
        fns = [lambda f=f: (context(), f()) for f in fns] + [context]
    calls = []
    for fn in fns:
        for _ in range(3):
            fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_round_s or n < 1:
            fn()
            n += 1
        calls.append(n)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(calls[i]):
                fn()
            samples[i].append((time.perf_counter() - start) / calls[i])
    return samples


# A kernel's time after the library call is resolved only when it exceeds the resolution
# of the call's own fastest round (its two fastest rounds differ by that much; slower
# rounds are load bursts, which the minimum ignores) and this share of the call: on a
# shared 2-core machine a repeated measurement moves by ~5% (see `cost_models.learned`).
RESOLVE_SHARE = 0.05


@dataclass(frozen=True)
class NetTiming:
    """Kernel seconds per call net of the context call that precedes it.

    `latencies[i]` is the fastest round with context less the fastest round of the context
    alone, or None when that difference is within `noise_s`: such a kernel costs less than
    the measurement can resolve, and a floored or negative number would be a label that
    ranks it as the fastest configuration. `rounds` are the per-round differences (each
    round's context subtracted, unfloored), for judging the spread."""

    latencies: list[float | None]
    rounds: list[list[float]]
    context_s: float
    noise_s: float

    def error(self) -> str | None:
        if all(v is not None for v in self.latencies):
            return None
        return (f"within measurement noise: kernel time after the library call is below "
                f"{self.noise_s * 1e6:.2f} us (the call itself takes {self.context_s * 1e6:.2f} us); "
                "no label recorded")


def net_of_context(with_context: list[list[float]], alone: list[float]) -> NetTiming:
    context = min(alone)
    fastest = sorted(alone)
    noise = max(fastest[1] - fastest[0] if len(fastest) > 1 else 0.0, RESOLVE_SHARE * context)
    latencies: list[float | None] = []
    for per in with_context:
        net = min(per) - context
        latencies.append(net if net > noise else None)
    rounds = [[t - c for t, c in zip(per, alone)] for per in with_context]
    return NetTiming(latencies, rounds, context, noise)


def time_kernels(kernels, args, rounds: int, min_round_s: float, context=None):
    """(latencies, per-round samples, error): the fastest round per kernel; with a context,
    net of it, and an error naming the noise when a kernel cannot be resolved."""
    samples = _time_interleaved(kernels, args, rounds, min_round_s, context)
    if context is None:
        return [min(r) for r in samples], samples, None
    net = net_of_context(samples[:-1], samples[-1])
    return net.latencies, net.rounds, net.error()


def _example(tensor_type, generator):
    import torch

    from ir import dtypes

    shape, dtype = dtypes.shape_of(tensor_type), dtypes.dtype_of(tensor_type)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    return torch.zeros(shape, dtype=dtype)  # indices: row 0 is always valid


if __name__ == "__main__":
    raise SystemExit(main())
