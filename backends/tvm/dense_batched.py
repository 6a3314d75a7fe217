"""Packed dense over a stack of weights: `y[e] = x[e] @ W[e]` with W a 3-d parameter.

Why: a mixture-of-experts layer computed densely (the zoo's `moe`, and any model that
keeps its experts as stacked `[E, K, N]` weights) multiplies the tokens by every
expert's weight: `tokens @ w_gate` is `[T, K] @ [E, K, N] -> [E, T, N]`, and the down
projection `[E, T, H] @ [E, H, N]`. These were the last contractions of the zoo on
torch's GEMM (74% of `moe`'s FLOPs), so the program's library share kept its other
kernels serial (`thread_policy.py`).

The kernel is `dense_packed.py`'s register-blocked outer product with the expert as
one more outer loop: each expert's weight is packed at load time like a linear's,
`Wp [E, ceil(N/nb), K, nb]`, and the parallel loop runs over (weight block, expert, row
tile). The activations are shared by every expert (`x [T, K]`, broadcast) or per expert
(`x [E, T, K]`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tvm import te, tirx

from backends.tvm.dense_packed import MIN_PARALLEL_MACS, DenseTiles, schedule_dense


def pack_stacked(w: torch.Tensor, nb: int) -> torch.Tensor:
    """[E, K, N] -> [E, ceil(N/nb), K, nb], zero-padded along N."""
    e, k, n = w.shape
    blocks = math.ceil(n / nb)
    if blocks * nb != n:
        w = F.pad(w, (0, blocks * nb - n))
    return w.reshape(e, k, blocks, nb).permute(0, 2, 1, 3).contiguous()


def batched_packed_func(
    batch: int, length: int, k: int, n: int, tiles: DenseTiles, x_batched: bool, threads: int = 2
) -> tirx.PrimFunc:
    """Scheduled PrimFunc `(x [T, K] or [E, T, K], Wp [E, N/nb, K, nb], out [E, T, N])`.

    As in `dense_packed_func`, the accumulator covers whole row tiles (a ragged last tile
    re-reads row T-1) and the write-back drops what lies outside `out`.
    """
    nb = tiles.nb
    rows, blocks = math.ceil(length / tiles.mt) * tiles.mt, math.ceil(n / nb)
    x = te.placeholder((batch, length, k) if x_batched else (length, k), "float32", name="x")
    wp = te.placeholder((batch, blocks, k, nb), "float32", name="w_packed")
    r = te.reduce_axis((0, k), name="k")

    def x_at(e, i):
        i = tirx.min(i, length - 1) if rows > length else i
        return x[e, i, r] if x_batched else x[i, r]

    acc = te.compute(
        (batch, rows, blocks * nb),
        lambda e, i, j: te.sum(x_at(e, i) * wp[e, j // nb, r, j % nb], axis=r),
        name="acc",
    )
    out = te.compute((batch, length, n), lambda e, i, j: acc[e, i, j], name="out")
    func = te.create_prim_func([x, wp, out])
    macs = batch * rows * k * blocks * nb
    return schedule_dense(func, tiles, 1, threads if macs >= MIN_PARALLEL_MACS else 1)
