"""Bit-accurate emulation of an HLS graph in torch: what the generated C++ must compute.

Every layer works on raw integers (int64 tensors, batch first) and converts with
`FixedPoint.to_integer`, the exact `ap_fixed` conversion emulation in `ir.quant.fixed`
(see `convert` for how a wide integer is handed to it exactly). Sums of products run as float64 matmuls and
convolutions on integer-valued tensors: every partial sum is an integer below 2^53 (the
accumulator bounds guarantee it), so they are exact in any order, like the C++ loops.
Layers whose C++ uses data-dependent shifts (softmax, layer norm) are emulated with the
same int64 shifts, arithmetic right shift being floor, as in C++.

The C simulation (`csim.py`) is checked against `run` for equality, not closeness.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from backends.base import BackendError
from backends.hls import layers as L
from ir.quant.fixed import FixedPoint

LIMIT = 1 << 53  # float64 sums of integers are exact below this


def convert(k: torch.Tensor, frac: int, t: FixedPoint) -> torch.Tensor:
    """Raw integers k with `frac` fractional bits, converted to type t (its rounding and
    overflow modes), as C++ assigns a wider ap_fixed to a narrower one.

    Exact for any int64 k: the bits below t's LSB are summarized as 0 (none), 1 (below
    half), 2 (half) or 3 (above half), which is all any rounding mode looks at, and the
    integer part is reduced mod 2^W keeping its sign (AP_WRAP) or clamped just past t's
    range (the saturating modes) first, so what `FixedPoint.to_integer` rounds and overflows is exact in float64.
    """
    d = frac - t.frac_bits
    if d <= 0:
        if k.numel() and int(k.abs().max()) >= 1 << (62 + d):
            raise BackendError(f"hls emulation: a value overflows int64 on its way to {t.name}")
        q, code = k * (1 << -d), torch.zeros_like(k)
    else:
        q = torch.bitwise_right_shift(k, d)
        r = k - q * (1 << d)
        half = 1 << (d - 1)
        code = (r != 0).to(torch.int64) + (r >= half).to(torch.int64) + (r > half).to(torch.int64)
    if t.o_mode == "AP_WRAP":  # congruent mod 2^W and of the same sign (ZERO/INF modes read it)
        m = q & ((1 << t.width) - 1)
        q = torch.where(q < 0, m - (1 << t.width), m)
    else:
        q = q.clamp(t.kmin - 2, t.kmax + 2)
    summary = torch.ldexp((q * 4 + code).to(torch.float64), torch.tensor(float(-(t.frac_bits + 2)), dtype=torch.float64))
    return t.to_integer(summary)


def shift_floor(k: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    """floor(k * 2^-s): arithmetic right shift for s >= 0, multiplication by 2^-s below."""
    s = torch.as_tensor(s, dtype=torch.int64)
    right = torch.bitwise_right_shift(k, s.clamp(min=0))
    left = k * torch.bitwise_left_shift(torch.ones_like(s), (-s).clamp(min=0))
    return torch.where(s >= 0, right, left)


def msb(v: torch.Tensor) -> torch.Tensor:
    """Index of the highest set bit of each v > 0."""
    p = torch.zeros_like(v)
    x = v.clone()
    for b in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << b)
        p = p + big.to(torch.int64) * b
        x = torch.where(big, x >> b, x)
    return p


def _exact_int(x: torch.Tensor) -> torch.Tensor:
    """A float64 tensor of exact integers back to int64."""
    if x.numel() and float(x.abs().max()) >= LIMIT:
        raise BackendError("hls emulation: an exact sum reached 2^53; the accumulator bound is wrong")
    return x.to(torch.int64)


def _scaled(k: torch.Tensor, shift: int) -> torch.Tensor:
    return k * (1 << shift) if shift >= 0 else shift_floor(k, -shift)


# ---- layers ---------------------------------------------------------------------------


def dense(layer: L.Dense, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    fx, fw = layer.inputs[0].type.frac_bits, layer.weight.type.frac_bits
    prod = x.reshape(b, layer.rows, layer.n_in).double() @ layer.weight.codes.double().T
    return _finish_mac(layer, prod, fx + fw).reshape(b, *layer.output.shape)


def conv2d(layer: L.Conv2d, x: torch.Tensor) -> torch.Tensor:
    c = layer.inputs[0].shape[0]
    w = layer.weight.codes.double().reshape(layer.n_out, c, *layer.kernel)
    prod = F.conv2d(x.double(), w, None, layer.stride, layer.padding, layer.dilation)  # [B, O, OH, OW]
    rows = prod.permute(0, 2, 3, 1)  # bias broadcasts over the last dim
    fx, fw = layer.inputs[0].type.frac_bits, layer.weight.type.frac_bits
    return _finish_mac(layer, rows, fx + fw).permute(0, 3, 1, 2).contiguous()


def _finish_mac(layer: L.Dense, prod: torch.Tensor, frac: int) -> torch.Tensor:
    fa = layer.acc.frac_bits
    if fa < frac:  # the C++ would round every partial sum; lower.py never asks for that
        raise BackendError(f"hls: {layer.name}'s accumulator {layer.acc.name} has fewer than the {frac} "
                           "fractional bits of its products")
    total = prod * 2.0 ** (fa - frac)
    if layer.bias is not None:
        total = total + layer.bias.codes.double() * 2.0 ** (fa - layer.bias.type.frac_bits)
    acc = convert(_exact_int(total), fa, layer.acc)
    return convert(acc, fa, layer.output.type)


def matmul(layer: L.Matmul, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    frac = layer.inputs[0].type.frac_bits + layer.inputs[1].type.frac_bits
    if a.dim() > b.dim():  # a per-sample rank-2 b is shared by a's batch dims
        b = b.reshape(b.shape[0], *([1] * (a.dim() - b.dim())), *b.shape[1:])
    prod = _exact_int(torch.matmul(a.double(), b.double()))
    acc = convert(prod, frac, layer.acc)
    return convert(acc, frac, layer.output.type)


def softmax_core(k: torch.Tensor, tables: L.SoftmaxTables, out: FixedPoint,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dim of raw inputs k (see `layers.Softmax`)."""
    low = torch.iinfo(torch.int64).min
    m = (k if valid is None else torch.where(valid, k, low)).amax(-1, keepdim=True)
    d = m - k
    if valid is not None:
        d = torch.where(valid, d, 0)
    e = tables.exp.codes[shift_floor(d, tables.exp_shift).clamp(0, tables.exp.numel - 1)]
    if valid is not None:
        e = torch.where(valid, e, 0)
    s = e.sum(-1, keepdim=True)
    pm = msb(s)
    bits = tables.recip_bits
    ridx = shift_floor(s, pm - bits) - (1 << bits)
    r = tables.recip.codes[ridx]
    wide = shift_floor(e * r, tables.recip.type.frac_bits + pm - tables.wide_frac)
    return convert(wide, tables.wide_frac, out)


def softmax(layer: L.Softmax, x: torch.Tensor) -> torch.Tensor:
    return softmax_core(x, layer.tables, layer.output.type)


def attention(layer: L.Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    tq, tk, tv = (t.type for t in layer.inputs)
    f_dot = tq.frac_bits + tk.frac_bits
    dots = _exact_int(q.double() @ k.double().transpose(-1, -2))
    dots = convert(dots, f_dot, layer.score_acc)
    scores = convert(dots * layer.scale.codes.reshape(()), f_dot + layer.scale.type.frac_bits, layer.score)
    valid = None
    if layer.causal:
        n_q, n_k = scores.shape[-2], scores.shape[-1]
        valid = torch.ones(n_q, n_k, dtype=torch.bool).tril()
    p = softmax_core(scores, layer.tables, layer.prob, valid)
    f_pv = layer.prob.frac_bits + tv.frac_bits
    pv = convert(_exact_int(p.double() @ v.double()), f_pv, layer.out_acc)
    return convert(pv, f_pv, layer.output.type)


def layer_norm(layer: L.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    b, n = x.shape[0], layer.n
    k = x.reshape(b, layer.rows, n)
    log_n = (n - 1).bit_length()  # ceil(log2 n)
    c = round(2 ** (layer.inv_n_frac + log_n) / n)  # 1/n with inv_n_frac + log_n fractional bits
    g = layer.guard
    s = k.sum(-1, keepdim=True)
    mean = shift_floor(s * (1 << g) * c, layer.inv_n_frac + log_n)
    d = k * (1 << g) - mean
    q = (d * d).sum(-1, keepdim=True)
    var = shift_floor(shift_floor(q, log_n + layer.var_shift) * c, layer.inv_n_frac)
    v = var + layer.eps_raw
    v = torch.where(v <= 0, torch.ones_like(v), v)
    pm = msb(v)
    e = pm - layer.var_frac
    h = e & 1
    qe = (e - h) >> 1
    bits = layer.rsqrt_bits
    idx = h * (1 << bits) + shift_floor(v, pm - bits) - (1 << bits)
    r = layer.rsqrt.codes[idx]
    gamma, fg = (layer.gamma.codes, layer.gamma.type.frac_bits) if layer.gamma is not None else (1, 0)
    z = d * r * gamma
    wide = layer.wide_frac
    acc = shift_floor(z, layer.d_frac + layer.rsqrt.type.frac_bits + fg + qe - wide)
    if layer.beta is not None:
        acc = acc + layer.beta.codes * (1 << (wide - layer.beta.type.frac_bits))
    return convert(acc, wide, layer.output.type).reshape(b, *layer.output.shape)


def lut(layer: L.Lut, x: torch.Tensor) -> torch.Tensor:
    idx = (shift_floor(x, layer.shift) + layer.size // 2).clamp(0, layer.size - 1)
    t = layer.table.codes[idx]
    if layer.gated:
        return convert(x * t, layer.inputs[0].type.frac_bits + layer.table.type.frac_bits, layer.output.type)
    return convert(t, layer.table.type.frac_bits, layer.output.type)


def relu(layer: L.Relu, x: torch.Tensor) -> torch.Tensor:
    return convert(x.clamp(min=0), layer.inputs[0].type.frac_bits, layer.output.type)


def cast(layer: L.Cast, x: torch.Tensor) -> torch.Tensor:
    return convert(x, layer.inputs[0].type.frac_bits, layer.output.type)


def binary(layer: L.Binary, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    fa = layer.inputs[0].type.frac_bits
    if layer.other is not None:
        b = layer.other.codes.reshape(1, *layer.output.shape)
        fb = layer.other.type.frac_bits
    else:
        fb = layer.inputs[1].type.frac_bits
    if layer.fn == "mul":
        return convert(a * b, fa + fb, layer.output.type)
    f = max(fa, fb)
    a2, b2 = _scaled(a, f - fa), _scaled(b, f - fb)
    return convert(a2 + b2 if layer.fn == "add" else a2 - b2, f, layer.output.type)


def scale_shift(layer: L.ScaleShift, x: torch.Tensor) -> torch.Tensor:
    view = [1] * (x.dim())
    view[layer.axis + 1] = -1
    s, t = layer.scale.codes.reshape(view), layer.shift.codes.reshape(view)
    fx, fs, ft = layer.inputs[0].type.frac_bits, layer.scale.type.frac_bits, layer.shift.type.frac_bits
    f = max(fx + fs, ft)
    return convert(_scaled(x * s, f - fx - fs) + _scaled(t, f - ft), f, layer.output.type)


def pool2d(layer: L.Pool2d, x: torch.Tensor) -> torch.Tensor:
    fx = layer.inputs[0].type.frac_bits
    if layer.mode == "max":
        y = F.max_pool2d(x.double(), layer.kernel, layer.stride, layer.padding)
        return convert(_exact_int(y), fx, layer.output.type)
    s = _exact_int(F.avg_pool2d(x.double(), layer.kernel, layer.stride, layer.padding, divisor_override=1))
    return _divide(s, fx, layer.kernel[0] * layer.kernel[1], layer.inv_frac, layer.output.type)


def _divide(s: torch.Tensor, frac: int, count: int, inv_frac: int, out: FixedPoint) -> torch.Tensor:
    """s / count: a change of fractional bits for a power of two, else s * round(2^f / count)."""
    log = L.pow2_log(count)
    if log is not None:
        return convert(s, frac + log, out)
    return convert(s * round(2**inv_frac / count), frac + inv_frac, out)


def reduce(layer: L.Reduce, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    dims = [d + 1 for d in layer.dims]
    kept = [d for d in range(1, x.dim()) if d not in dims]
    flat = x.permute(0, *kept, *dims).reshape(b, -1, layer.count)
    fx = layer.inputs[0].type.frac_bits
    if layer.mode == "max":
        y = convert(flat.amax(-1), fx, layer.output.type)
    elif layer.mode == "sum":
        y = convert(flat.sum(-1), fx, layer.output.type)
    else:
        y = _divide(flat.sum(-1), fx, layer.count, layer.inv_frac, layer.output.type)
    return y.reshape(b, *layer.output.shape)


def transpose(layer: L.Transpose, x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, *[d + 1 for d in layer.perm]).contiguous()


RUN: dict[type, Callable[..., torch.Tensor]] = {
    L.Conv2d: conv2d, L.Dense: dense, L.Matmul: matmul, L.Softmax: softmax, L.Attention: attention,
    L.LayerNorm: layer_norm, L.Lut: lut, L.Relu: relu, L.Cast: cast, L.Binary: binary,
    L.ScaleShift: scale_shift, L.Pool2d: pool2d, L.Reduce: reduce, L.Transpose: transpose,
}


def run_raw(graph: L.HLSGraph, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Raw integers of every tensor for `inputs` (float tensors, batch first)."""
    env: dict[str, torch.Tensor] = {}
    for t, x in zip(graph.inputs, inputs):
        env[t.name] = t.type.to_integer(x.detach().to(torch.float32)).reshape(x.shape[0], *t.shape)
    for layer in graph.layers:
        args = [env[t.name].reshape(-1, *t.shape) for t in layer.inputs]  # a reshape is a view
        env[layer.output.name] = RUN[type(layer)](layer, *args)
    return env


def run(graph: L.HLSGraph, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The outputs' values (float64, exact) for `inputs`."""
    env = run_raw(graph, inputs)
    return [t.type.value_of(env[t.name]).reshape(-1, *t.shape) for t in graph.outputs]
