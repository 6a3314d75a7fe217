"""The LLVM target for the host CPU and the thread setup shared by TVM and torch.

Why this file exists:

- TVM 0.27 rejects ``"llvm -mcpu=native"`` and silently generates generic x86 code for the
  dict form ``{"mcpu": "native"}``, so AVX-512 is only used when the CPU is named
  (``znver5`` here). :func:`cpu_target` asks LLVM for the host CPU name.
- TVM's runtime thread pool sizes itself once per calling thread, from ``TVM_NUM_THREADS``
  (else ``OMP_NUM_THREADS``, else ``hardware_concurrency() / 2`` on x86). On this 2-core VM
  the default is therefore **one** thread: parallel TIR loops would run serially. The pool
  cannot grow after it exists (``runtime.config_threadpool`` only shrinks it), so
  :func:`configure_threads` must run before the first parallel kernel.
- Library calls (``library.py``) run torch/MKL kernels on torch's OpenMP pool while
  scheduled TIR runs on TVM's pool: main thread + one worker of each on 2 cores. The VM runs
  one kernel at a time, so the pools never work at once; they only collide when idle
  workers spin. TVM's worker spins with ``sched_yield`` (polite: a runnable thread on its
  core gets the CPU), 300k rounds by default; libgomp's worker busy-waits without yielding
  (``GOMP_SPINCOUNT``), which only the environment at process start controls; so each
  program runs one pool at a time (``thread_policy.py``: torch held at one thread while
  parallel TIR runs). :func:`configure_threads` sizes both pools alike, keeps TVM's worker
  spinning long enough to stay hot between TIR kernels (a cold wake is a futex round trip
  per kernel) and does not pin it to a core. Measurements in NOTES.md.

Options are plain arguments; reading the environment (``KILN_NUM_THREADS``) is the caller's
job, per the house rule that env vars are read in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import tvm
from tvm.target import Target


@dataclass(frozen=True)
class ThreadConfig:
    """How many threads each pool uses and how long TVM's workers spin.

    ``tvm_spin_count`` is the number of ``sched_yield`` rounds an idle TVM worker spins
    before sleeping (TVM's default is 300000, ~0.1 s of a core after every parallel kernel);
    ``None`` keeps TVM's default. ``bind_threads`` pins TVM's worker to a core (TVM's
    default); off here so the OS can move it away from a core where torch's worker spins.
    ``num_threads=1`` gives serial TIR and leaves both cores to torch: the robust choice
    when other processes share the cores.
    """

    num_threads: int = 2
    torch_threads: int | None = None
    tvm_spin_count: int | None = 20000
    bind_threads: bool = False


def default_thread_config(cores: int = 2) -> ThreadConfig:
    """The pools when the user did not choose: both as wide as the cores. Which one a
    program uses is decided per program (`thread_policy.py`): parallel TIR with torch held
    at one thread inside the call, or serial TIR beside torch's pool. Before that rule, TIR
    ran serially in every program while libgomp spins (on a 2-core Zen 1, `gpt` ran 67 ms
    with both pools at 2 threads and 19.5 ms with TIR serial; NOTES.md, Threads)."""
    return ThreadConfig(num_threads=cores, torch_threads=cores)


@cache
def host_cpu() -> str:
    """The LLVM name of this machine's CPU, e.g. ``znver5``."""
    return str(tvm.target.codegen.llvm_get_system_cpu())


def cpu_target(
    mcpu: str | None = None, num_cores: int | None = None, fast_math: bool = True
) -> Target:
    """An ``llvm`` target for ``mcpu`` (default: the host CPU).

    ``num-cores`` is read by TVM's tuning rules; schedules here read the vector width from
    the target (512 bits for AVX-512 CPUs). ``fast_math`` lets LLVM reassociate float sums
    and contract multiply-adds: without reassociation LLVM keeps a row reduction as one
    serial chain of adds, and a layer_norm runs 5x slower. It does not assume away NaN or
    infinity, so ``-inf`` attention masks stay exact.
    """
    config: dict[str, object] = {"kind": "llvm", "mcpu": mcpu or host_cpu()}
    if num_cores:
        config["num-cores"] = int(num_cores)
    if fast_math:
        config["fast-math-reassoc"] = True
        config["fast-math-contract"] = True
    return Target(config)


# Widest vector registers by ISA feature, widest first (x86; other CPUs fall through).
_SIMD_FEATURES = (("avx512f", 512), ("avx", 256), ("sse2", 128))


def vector_bits(target: Target) -> int:
    """The SIMD register width of ``target``'s CPU (128 when unknown).

    Read from the CPU's features, not from ``llvm_get_vector_width``: TVM 0.27 answers 512
    for every x86 CPU (Haswell and Zen 1 included), and kernels shaped for 16 lanes then
    run on 8-lane AVX2 registers, where a register tile sized for 32 zmm spills (the packed
    dense kernel ran 3.6x slower than the library on `gpt` on a Zen 1 host).
    """
    codegen = tvm.target.codegen
    for feature, bits in _SIMD_FEATURES:
        if codegen.target_has_features([feature], target):
            return bits
    bits = int(codegen.llvm_get_vector_width(target))
    return min(bits, 128) if bits > 0 else 128


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """How many ``dtype_bits``-wide elements fit one SIMD register of ``target``."""
    return max(vector_bits(target) // dtype_bits, 1)


@cache
def host_lanes(dtype_bits: int = 32) -> int:
    """Lanes of the host target's vectors: 16 float32 with AVX-512, 8 with AVX2."""
    return vector_lanes(cpu_target(), dtype_bits)


_configured: ThreadConfig | None = None


def configure_threads(config: ThreadConfig | None = None) -> ThreadConfig:
    """Size torch's and TVM's thread pools; call once, before the first compiled call.

    TVM reads its variables when the calling thread's pool is created (its first parallel
    kernel), so they are written into ``os.environ`` here: that is how the C runtime
    receives them, not a configuration channel of Kiln's. A second call with a different
    config only changes torch (TVM's pool of this thread is already sized) and returns the
    config in force for TVM.
    """
    global _configured
    config = config or ThreadConfig()
    import torch

    torch_threads = config.torch_threads or config.num_threads
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    if _configured is not None:
        return _configured
    os.environ["TVM_NUM_THREADS"] = str(config.num_threads)
    if config.tvm_spin_count is not None:
        os.environ["TVM_THREAD_POOL_SPIN_COUNT"] = str(config.tvm_spin_count)
    os.environ["TVM_BIND_THREADS"] = "1" if config.bind_threads else "0"
    _configured = config
    return config


def tvm_num_threads() -> int:
    """The size of TVM's pool for this thread (creates the pool if it does not exist)."""
    return int(tvm.get_global_func("runtime.NumThreads")())


def pools_for(num_threads: int | None) -> tuple[int, ThreadConfig]:
    """Threads the code is built for and the pools in force: the user's choice, or the rule
    that keeps TVM's and torch's workers from fighting (`default_thread_config`). Pools
    are sized once per process; the build and the compile cache's key both ask here."""
    threads = num_threads or 2
    pool = configure_threads(ThreadConfig(num_threads=threads) if num_threads
                             else default_thread_config(threads))
    return threads, pool
