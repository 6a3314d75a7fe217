"""`int8_dyn` on the CPU: W8A8 with dynamic per-row activation scales, int32 sums (VNNI).

The format (`ir.quant.registry`, `int8_dyn`): W [N, K] int8 with one float32 scale per
output channel; each row of the activation X [M, K] is quantized at run time to int8
with its own absmax scale `sa[m] = max|X[m]| / 127` (1 for an all-zero row), codes
`round_half_even(X / sa)` clamped to +-127, the division in float32, exactly as the
`int8` format's emulation does. Then `Y = float(sum_k qa*qw) * sa[m] * sw[n] (+ bias)`.

Why: the weight-only kernels (`quant_matmul.py`) decode weights to fp32 and run fp32
FMAs, so they cannot beat fp32 GEMM; an int8 dot product does 4x the multiply-adds of
an fp32 FMA per instruction. AVX-512 VNNI's `vpdpbusd` multiplies *unsigned* bytes by
signed bytes, 4 consecutive k per 32-bit lane, 16 lanes: so activations are shifted to
u8 (`qa + 128`) and the shift is taken back with a per-column compensation
`comp[n] = 128 * sum_k qw[n, k]`, computed at load time.

Layout (packed once at load, `pack_vnni`): `Wp [NV, K4, 64]` int8, NV vectors of 16
output channels, K4 = ceil(K / 4); byte `l*4 + b` of (v, k4) is `qw[v*16 + l, k4*4 + b]`.
Padding (k >= K, n >= N) is zero. The kernel quantizes X into a u8 buffer `Aq [MP, K4*4]`
(padding k and rows hold 128, i.e. zero), then runs an `mt x (16*nv)` register tile: per
k4 it broadcasts `mt` 32-bit groups of activations, loads `nv` weight vectors and issues
`mt * nv` `vpdpbusd` (LLVM 22's signature: `<16 x i32>, <64 x i8>, <64 x i8>`). On a host without VNNI (read from the target's features) the same
kernel runs the same quantized rows as float32 FMAs over a `[NV, KP, 16]` weight
(`pack_rows`; path `int8-dyn-tir (no VNNI)`): products of int8 codes are exact in float32
and so are the sums while below 2^24, so it matches the int32 path to rounding. (Plain
int32 vector code was tried there first: 16 GFLOP/s, 4-6x slower than fp32, because the
4-bytes-per-lane layout needs shuffles without `vpdpbusd`.)
"""

from __future__ import annotations

import functools
import math

import torch
import tvm
from tvm import tirx
from tvm.script import tirx as T

from backends.tvm.schedule import SCHEDULE_ATTR

OPAQUE = 8  # relax OpPatternKind.kOpaque
VNNI_PATH = "int8-dyn-vnni"
PLAIN_PATH = "int8-dyn-tir (no VNNI)"
MIN_PARALLEL_MACS = 1 << 18  # as dense_packed.py: below this a fork/join costs more than it saves


def has_vnni(target: tvm.target.Target | None = None) -> bool:
    """Whether `target` (default: the host CPU) has AVX-512 VNNI (`vpdpbusd` on zmm)."""
    if target is None:
        return _host_has_vnni()
    return bool(tvm.target.codegen.target_has_features(["avx512vnni"], target))


@functools.cache
def _host_has_vnni() -> bool:
    from backends.tvm.target import cpu_target

    return has_vnni(cpu_target())


def tiles(m: int, n: int) -> tuple[int, int]:
    """(mt rows, nv vectors of 16 columns) of the register tile: mt * nv accumulators of 16
    lanes, 16 zmm with AVX-512; on narrower vectors (AVX2: a 16-lane vector is two ymm, and
    there are 16 ymm) one vector of columns, so the tile does not spill."""
    from backends.tvm.target import host_lanes

    mt = min(m, 4)
    nv = min(4 if host_lanes() >= 16 else 1, math.ceil(n / 16))
    return mt, nv


def padded_vectors(n: int, nv: int) -> int:
    return math.ceil(n / (16 * nv)) * nv


def pack_vnni(codes: torch.Tensor, n: int, k: int, nv: int) -> torch.Tensor:
    """int8 `Wp [NV, K4, 64]` from the format's packed codes (one byte per weight, N x K)."""
    w = codes.reshape(-1)[: n * k].view(torch.int8).reshape(n, k)
    nvec, k4 = padded_vectors(n, nv), math.ceil(k / 4)
    full = torch.zeros(nvec * 16, k4 * 4, dtype=torch.int8)
    full[:n, :k] = w
    return full.reshape(nvec, 16, k4, 4).permute(0, 2, 1, 3).reshape(nvec, k4, 64).contiguous()


def pack_rows(codes: torch.Tensor, n: int, k: int, nv: int) -> torch.Tensor:
    """int8 `Wp [NV, KP, 16]` for the path without VNNI: 16 output channels per k, contiguous."""
    w = codes.reshape(-1)[: n * k].view(torch.int8).reshape(n, k)
    nvec, kp = padded_vectors(n, nv), math.ceil(k / 4) * 4
    full = torch.zeros(nvec * 16, kp, dtype=torch.int8)
    full[:n, :k] = w
    return full.reshape(nvec, 16, kp).permute(0, 2, 1).contiguous()


def pack(codes: torch.Tensor, n: int, k: int, nv: int, vnni: bool) -> torch.Tensor:
    """The weight in the layout `int8_dyn_func(..., vnni)` reads."""
    return pack_vnni(codes, n, k, nv) if vnni else pack_rows(codes, n, k, nv)


def compensation(codes: torch.Tensor, n: int, k: int, nv: int) -> torch.Tensor:
    """int32 `128 * sum_k qw[n, k]` per (padded) output channel."""
    w = codes.reshape(-1)[: n * k].view(torch.int8).reshape(n, k).to(torch.int32)
    out = torch.zeros(padded_vectors(n, nv) * 16, dtype=torch.int32)
    out[:n] = 128 * w.sum(dim=1, dtype=torch.int32)
    return out


def int8_dyn_func(m: int, k: int, n: int, bias: bool, vnni: bool, threads: int) -> tirx.PrimFunc:
    """The PrimFunc; arguments X [m, k] f32, Wp, comp, sw [n, 1] f32, bias [n] f32, Y [m, n] f32.

    Without `bias` the kernel skips the add and the bias argument is not read (pass any
    float32 [n] tensor)."""
    mt, nv = tiles(m, n)
    nvec, k4 = padded_vectors(n, nv), math.ceil(k / 4)
    kp, mtiles, nblocks = k4 * 4, math.ceil(m / mt), nvec // nv
    kv = k // 16  # whole 16-float vectors of a row
    wshape = (nvec, k4, 64) if vnni else (nvec, kp, 16)  # `pack`
    acc_dtype = "int32" if vnni else "float32"
    mp = mtiles * mt
    parallel = threads > 1 and m * n * k >= MIN_PARALLEL_MACS

    @T.prim_func(private=True)
    def func(
        X: T.Buffer((m, k), "float32"),
        Wp: T.Buffer(wshape, "int8"),
        comp: T.Buffer((nvec * 16,), "int32"),
        sw: T.Buffer((n, 1), "float32"),
        B: T.Buffer((n,), "float32"),
        Y: T.Buffer((m, n), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        Aq = T.alloc_buffer((mp, kp), "uint8")
        sa = T.alloc_buffer((mp,), "float32")
        for r in T.parallel(mp) if parallel else T.serial(mp):  # quantize rows: absmax (16 lanes, then across), codes
            if r < m:
                amax = T.alloc_buffer((16,), "float32", scope="local")
                for l in T.vectorized(16):
                    amax[l] = T.float32(0)
                for c0 in range(kv):
                    for l in T.vectorized(16):
                        amax[l] = T.max(amax[l], T.fabs(X[r, c0 * 16 + l]))
                for c in range(kv * 16, k):
                    amax[0] = T.max(amax[0], T.fabs(X[r, c]))
                for l in range(1, 16):
                    amax[0] = T.max(amax[0], amax[l])
                s = amax[0] / T.float32(127)
                sa[r] = T.Select(s > T.float32(0) and s < T.float32(3.0e38), s, T.float32(1))
                for c0 in range(kv):
                    for l in T.vectorized(16):  # no `let` inside: TVM 0.27 vectorizes it wrong
                        Aq[r, c0 * 16 + l] = T.Cast("uint8", T.Cast("int32", T.max(T.min(
                            T.round(X[r, c0 * 16 + l] / sa[r]), T.float32(127)), T.float32(-127))) + 128)
                for c in range(kv * 16, kp):
                    if c < k:
                        Aq[r, c] = T.Cast("uint8", T.Cast("int32", T.max(T.min(
                            T.round(X[r, c] / sa[r]), T.float32(127)), T.float32(-127))) + 128)
                    else:
                        Aq[r, c] = T.uint8(128)
            else:
                sa[r] = T.float32(1)
                for c in range(kp):
                    Aq[r, c] = T.uint8(128)
        for t in T.parallel(mtiles * nblocks) if parallel else T.serial(mtiles * nblocks):
            acc = T.alloc_buffer((mt, nv * 16), acc_dtype, scope="local")
            m0 = (t // nblocks) * mt
            v0 = (t % nblocks) * nv
            for i in T.unroll(mt):
                for j in T.unroll(nv):
                    acc[i, T.ramp(j * 16, 1, 16)] = T.broadcast(T.int32(0), 16) if vnni else T.broadcast(T.float32(0), 16)
            if vnni:
                for kk in range(k4):
                    for i in T.unroll(mt):
                        a = T.reinterpret("int8x64", T.broadcast(T.reinterpret("int32", Aq.vload([m0 + i, kk * 4], "uint8x4")), 16))
                        for j in T.unroll(nv):
                            acc[i, T.ramp(j * 16, 1, 16)] = T.call_llvm_pure_intrin(
                                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                acc[i, T.ramp(j * 16, 1, 16)], a,
                                Wp.vload([v0 + j, kk, 0], "int8x64"), dtype="int32x16")
            else:  # products of codes are exact in float32, and so are sums below 2^24
                for kk in range(kp):
                    for i in T.unroll(mt):
                        af = T.Cast("float32", T.Cast("int32", Aq[m0 + i, kk]) - 128)
                        for j in T.unroll(nv):
                            for l in T.vectorized(16):
                                acc[i, j * 16 + l] = acc[i, j * 16 + l] + af * T.Cast("float32", Wp[v0 + j, kk, l])
            for i in T.unroll(mt):
                if m0 + i < m:
                    for j in T.unroll(nv):
                        if (v0 + j) * 16 + 16 <= n:  # a whole vector of columns
                            for l in T.vectorized(16):  # no `let` here: TVM 0.27 vectorizes it wrong
                                Y[m0 + i, (v0 + j) * 16 + l] = (
                                    (T.Cast("float32", acc[i, j * 16 + l] - comp[(v0 + j) * 16 + l]) if vnni else acc[i, j * 16 + l]) * sa[m0 + i]
                                    * sw[(v0 + j) * 16 + l, 0] + (B[(v0 + j) * 16 + l] if bias else T.float32(0)))
                        else:  # the last columns (TVM 0.27 drops an `if` inside a vectorized loop)
                            for l in T.serial(16):
                                if (v0 + j) * 16 + l < n:
                                    y = (T.Cast("float32", acc[i, j * 16 + l] - comp[(v0 + j) * 16 + l]) if vnni else acc[i, j * 16 + l]) * sa[m0 + i] * sw[(v0 + j) * 16 + l, 0]
                                    Y[m0 + i, (v0 + j) * 16 + l] = y + B[(v0 + j) * 16 + l] if bias else y

    rule = VNNI_PATH if vnni else PLAIN_PATH
    return func.with_attr(SCHEDULE_ATTR, rule).with_attr("op_pattern", OPAQUE)


def reference(x: torch.Tensor, codes: torch.Tensor, sw: torch.Tensor, bias: torch.Tensor | None,
              n: int) -> torch.Tensor:
    """What the kernel computes, in torch (exact int32 sums, then the same float32 epilogue)."""
    from ir.quant import get_format

    fmt = get_format("int8")
    x2 = x.reshape(-1, x.shape[-1]).to(torch.float32)
    k = x2.shape[1]
    qa = fmt.quantize(x2)
    a = fmt.element.decode(qa.codes).to(torch.int64)
    w = codes.reshape(-1)[: n * k].view(torch.int8).reshape(n, k).to(torch.int64)
    sums = (a @ w.t()).to(torch.float32)
    y = sums * qa.scales.to(torch.float32) * sw.reshape(1, n).to(torch.float32)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], n)
