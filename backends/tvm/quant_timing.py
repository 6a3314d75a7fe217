"""Measured time of one quantized contraction kernel, for the quantization ILP's latency term.

`kernel_seconds(fmt, m, k, n)` builds the kernel the TVM backend would run for a layer
whose weight is stored in `fmt` (`quant_vnni.py` for `int8_dyn`, the fused weight-only
kernel of `quant_matmul.py` for every format TIR decodes) on random data of that shape,
and times it with TVM's `time_evaluator` (median of `repeat` runs of `number` calls).
Formats without a TIR kernel return None: the caller falls back to the modeled time and
says so. A build costs ~0.3-1 s; `passes/quant_latency.py` caches the results on disk.
"""

from __future__ import annotations

import statistics

import torch
import tvm

from backends.tvm import quant_vnni as qv
from backends.tvm.quant_decode import PackedLayout, unsupported_reason
from backends.tvm.quant_matmul import MatmulShape, quant_matmul_func
from backends.tvm.target import cpu_target, host_cpu, host_lanes
from ir.quant import get_format


def host_key(threads: int) -> str:
    """What the measurements depend on: the CPU, its int8 dot product, the kernel threads."""
    return f"{host_cpu()}-{'vnni' if qv.has_vnni() else 'novnni'}-t{threads}"


def _args(fmt: str, m: int, k: int, n: int) -> tuple[list[torch.Tensor], str]:
    f = get_format(fmt)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g)
    q = f.quantize(torch.randn(n, k, generator=g))
    codes = f.pack(q)
    out = torch.empty(m, n)
    if fmt in qv_formats():
        vnni = qv.has_vnni()
        _, nv = qv.tiles(m, n)
        args = [x, qv.pack(codes, n, k, nv, vnni), qv.compensation(codes, n, k, nv), q.scales.float(),
                torch.zeros(n), out]
        return args, qv.VNNI_PATH if vnni else qv.PLAIN_PATH
    scales = [] if q.scales is None else [q.scales.view(torch.int8) if q.scales.dtype == torch.uint8 else q.scales]
    return [x, codes.view(torch.int8), *scales, out], "fused-tir"


def qv_formats() -> tuple[str, ...]:
    return ("int8_dyn",)


def kernel_func(fmt: str, m: int, k: int, n: int, threads: int) -> tvm.tirx.PrimFunc | None:
    """The PrimFunc the backend runs for this layer, or None when TIR cannot decode `fmt`."""
    if fmt in qv_formats():
        return qv.int8_dyn_func(m, k, n, False, qv.has_vnni(), threads)
    f = get_format(fmt)
    if f.resolve(1.0) is not f or unsupported_reason(f) is not None:
        return None
    return quant_matmul_func(MatmulShape((m, k), (m, n), k), PackedLayout(fmt, n, k), False, host_lanes(), threads)


def kernel_seconds(fmt: str, m: int, k: int, n: int, threads: int = 1, number: int = 5,
                   repeat: int = 5) -> tuple[float, str] | None:
    """(median seconds per call, kernel path) of the layer's kernel, or None (no TIR kernel)."""
    func = kernel_func(fmt, m, k, n, threads)
    if func is None:
        return None
    args, path = _args(fmt, m, k, n)
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    ex = tvm.compile(mod, target=cpu_target())
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a.contiguous().numpy(), dev) for a in args]
    timer = ex.mod.time_evaluator("main", dev, number=number, repeat=repeat)
    return float(statistics.median(timer(*targs).results)), path
