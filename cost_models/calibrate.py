"""`kiln calibrate`: measure this CPU's roofline parameters and store them for the cost models.

Measured: fp32 GEMM FLOP/s (torch.mm on 1024^3, the BLAS the library path calls), memory
bandwidth (STREAM-style triad over arrays far larger than the caches), and the fixed cost
of one compiled call (an empty-ish TVM kernel through the Relax VM), each as the median of
repeated runs, for the given thread count.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from cost_models.hardware import CPU_DEFAULT, Hardware, save_calibrated


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure_gemm_flops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return 2 * n**3 / _median_seconds(lambda: torch.mm(a, b, out=out), repeats)


def measure_bandwidth(mib: int = 64, repeats: int = 10) -> float:
    n = mib * 2**20 // 4
    a, b, c = torch.randn(n), torch.randn(n), torch.empty(n)
    # triad c = a + 2 b reads two arrays and writes one
    return 3 * n * 4 / _median_seconds(lambda: torch.add(a, b, alpha=2.0, out=c), repeats)


def measure_call_overhead(repeats: int = 200) -> float:
    """One kernel launch through the path compiled models use: a small TVM VM call."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.add(x, x)))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(tvm.compile(bb.get(), target="llvm"), tvm.cpu())
    arg = tvm.runtime.tensor(torch.randn(64).numpy(), tvm.cpu())
    main = vm["main"]
    return _median_seconds(lambda: main(arg), repeats)


def calibrate(threads: int = 2, save: bool = True) -> Hardware:
    torch.set_num_threads(threads)
    hw = replace(
        CPU_DEFAULT,
        peak_flops={**CPU_DEFAULT.peak_flops, "float32": measure_gemm_flops()},
        mem_bandwidth=measure_bandwidth(),
        launch_overhead_s=measure_call_overhead(),
        extra={"threads": float(threads)},
    )
    if save:
        save_calibrated(hw)
    return hw
