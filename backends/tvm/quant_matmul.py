"""The fused weight-only quantized matmul: one TIR kernel that reads packed weights.

`C[b, m, n] = sum_k A[b, m, k] * W[b*N + n, k] (+ bias[n])`, where W is the row view of a
packed weight (`quant_decode.py`). Nothing materializes W: the kernel walks tiles of NT
weight rows, decodes each tile once into a small buffer (NT x K floats, in L1/L2), and
runs every activation row against it before moving on, so each weight byte is read once
per call and the fp32 weight never exists at load time or in memory per call.

Why TIR and not torch's CPU weight-only kernels: `aten._weight_int8pack_mm` and
`_weight_int4pack_mm_for_cpu` are fast only with bf16 activations; with fp32 activations
(which the emulation's numerics need) they measured 15-60x slower than an fp32 MKL GEMM
here (8x256x512: 660 us int8, 900 us int4, 27 us fp32). The TIR kernels use AVX-512
(MKL's AMD path here is AVX2); the schedules and their measurements are in
`quant_schedule.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import te, tirx

from backends.tvm.quant_decode import PackedLayout, decoded, placeholders
from backends.tvm.quant_schedule import schedule
from backends.tvm.schedule import SCHEDULE_ATTR

OPAQUE = 8  # relax OpPatternKind.kOpaque: FuseOps must never merge these kernels


@dataclass(frozen=True)
class MatmulShape:
    """`out = A x W^T` in the contraction's own shapes (so no reshape kernels around it).

    `out` is (*lead, n). With `batch_dims == 0` the weight (n rows) is shared and every
    leading dim is a row of A: A is (*lead, k). Otherwise the first `batch_dims` leading
    dims index the weight's batch (rows b*n + n') and A is (*lead, k) or, broadcast,
    (*ones, m, k).
    """

    a_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    k: int
    batch_dims: int = 0

    @property
    def n(self) -> int:
        return self.out_shape[-1]

    @property
    def batch(self) -> int:
        return math.prod(self.out_shape[: self.batch_dims])

    @property
    def m(self) -> int:
        return math.prod(self.out_shape[self.batch_dims : -1])

    @property
    def macs(self) -> int:
        return math.prod(self.out_shape) * self.k


def quant_matmul_func(
    shape: MatmulShape, layout: PackedLayout, bias: bool, lanes: int, threads: int
) -> tirx.PrimFunc:
    """The scheduled PrimFunc; its arguments in order: A, codes, [scales], [bias], out."""
    codes, scales = placeholders(layout)
    A = te.placeholder(shape.a_shape, "float32", name="A")
    _, read = decoded(codes, scales, layout)
    k = te.reduce_axis((0, shape.k), name="k")
    nb, a_rank = shape.batch_dims, len(shape.a_shape)

    def a_at(idx):  # A's leading dims line up with out's trailing ones; size 1 broadcasts
        offset = len(idx) - a_rank
        lead = [0 if d == 1 else idx[i + offset] for i, d in enumerate(shape.a_shape[:-1])]
        return A[(*lead, k)]

    def row(idx):
        r = 0
        for i in range(nb):
            r = r * shape.out_shape[i] + idx[i]
        return r * shape.n + idx[-1]

    C = te.compute(
        shape.out_shape, lambda *idx: te.sum(a_at(idx) * read(row(idx), k), axis=k), name="C"
    )
    args = [A, codes] + ([scales] if scales is not None else [])
    # The epilogue D (bias add, or a copy) writes the output, so the sums stay in registers.
    if bias:
        B = te.placeholder((shape.n,), "float32", name="bias")
        D = te.compute(C.shape, lambda *idx: C[idx] + B[idx[-1]], name="D")
        args.append(B)
    else:
        D = te.compute(C.shape, lambda *idx: C[idx], name="D")
    func, rule = schedule(te.create_prim_func([*args, D]), shape, layout, lanes, threads)
    return func.with_attr(SCHEDULE_ATTR, rule).with_attr("op_pattern", OPAQUE)


def dequantize_func(layout: PackedLayout, shape: tuple[int, ...], axis: int) -> tirx.PrimFunc:
    """A standalone dequantize (for consumers that cannot fuse, e.g. conv2d): the packed
    weight decoded into its fp32 `shape`. Left unscheduled: Kiln's `injective` rule
    (schedule.py) inlines the decode and vectorizes it like any elementwise kernel."""
    codes, scales = placeholders(layout)
    _, read = decoded(codes, scales, layout)
    axis %= len(shape)
    others = [d for i, d in enumerate(shape) if i != axis]

    def at(*idx):
        r = 0
        for i, d in zip([j for j in range(len(shape)) if j != axis], others):
            r = r * d + idx[i]
        return read(r, idx[axis])

    out = te.compute(shape, at, name="dequantize")
    args = [codes] + ([scales] if scales is not None else [])
    return te.create_prim_func([*args, out])
