"""aten converters for padding, pooling, convolutions and group norm, through existing kiln ops.

Real vision and audio models sent these to eager (issue 9): constant `pad` (EfficientNet's
and MobileNetV2's asymmetric TF-style padding, Swin's window padding),
`adaptive_avg_pool1d` (Swin's pooler), EfficientNet's global `avg_pool2d` with
`ceil_mode`, `conv1d` (Whisper, Wav2Vec2: 80% of their FLOPs), `conv2d` with string
padding ('same' / 'valid': all of EfficientNet's convolutions), `group_norm` (Wav2Vec2).
Constant padding is a concat with broadcast constants (a crop for negative pads);
`conv1d` is a `kiln.conv2d` of height 1; 'same' padding is symmetric conv padding, or an
explicit pad when torch puts the odd extra element on the high side; `group_norm` is a
`kiln.layer_norm` over each group, then the per-channel affine.
"""

from __future__ import annotations

import torch
from xdsl.ir import SSAValue

from compiler.capture.lowering import Lowering
from compiler.capture.table import _slice_value, converts
from compiler.capture.table_extra import binary, full, numel, reshape, shape
from ir import dtypes
from ir.ops.contraction import Conv2dOp
from ir.ops.movement import ConcatOp
from ir.ops.normalization import LayerNormOp
from ir.ops.pooling import Pool2dOp
from ir.ops.reduction import ReduceOp

aten = torch.ops.aten


def pad_constant(lw: Lowering, vx: SSAValue, pads: list[int], value: float | int = 0) -> SSAValue:
    """torch's `pad` list (last dim first, low then high), constant mode: crops and concats."""
    out = vx
    dtype = dtypes.dtype_of(vx.type)
    for i in range(len(pads) // 2):
        dim = len(shape(vx)) - 1 - i
        lo, hi = int(pads[2 * i]), int(pads[2 * i + 1])
        if lo < 0 or hi < 0:  # a negative pad crops
            n = shape(out)[dim]
            out = _slice_value(lw, out, dim, max(-lo, 0), n - max(-hi, 0), 1)
        block = lambda amount: full(lw, value, shape(out)[:dim] + (amount,) + shape(out)[dim + 1:], dtype)  # noqa: E731
        parts = ([block(lo)] if lo > 0 else []) + [out] + ([block(hi)] if hi > 0 else [])
        if len(parts) > 1:
            out = lw.emit(ConcatOp.make(*parts, dim=dim))
    return out


@converts(aten.constant_pad_nd.default, aten.pad.default)
def _pad(lw: Lowering, x, pads, *args, **kwargs):
    if lw.node.target is aten.pad.default:
        mode = kwargs.get("mode", args[0] if args else "constant")
        value = kwargs.get("value", args[1] if len(args) > 1 else None)
        if mode != "constant":
            raise lw.unsupported(f"pad mode {mode!r} (only constant padding is lowered)")
    else:
        value = kwargs.get("value", args[0] if args else 0)
    return pad_constant(lw, lw.value(x), list(pads), 0 if value is None else value)


@converts(aten.adaptive_avg_pool1d.default)
def _adaptive_avg_pool1d(lw: Lowering, x, output_size):
    vx = lw.value(x)
    size = shape(vx)
    (out,) = output_size
    if size[-1] % out:
        raise lw.unsupported(f"adaptive pooling {size[-1]} -> {out} is not a uniform window")
    grouped = reshape(lw, vx, size[:-1] + (out, size[-1] // out))
    return lw.emit(ReduceOp.make(grouped, kind="mean", dims=(len(size),), keepdim=False))


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(a) for a in v) * (n // len(v))
    return (int(v),) * n


def _string_padding(lw: Lowering, padding: str, kernel: tuple[int, ...], dilation: tuple[int, ...],
                    stride: tuple[int, ...]) -> list[tuple[int, int]]:
    """(low, high) per spatial dim for torch's 'valid' / 'same' (extra padding goes high)."""
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding != "same":
        raise lw.unsupported(f"padding={padding!r}")
    if any(s != 1 for s in stride):
        raise lw.unsupported("padding='same' with stride > 1")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return [(t // 2, t - t // 2) for t in total]


def _conv(lw: Lowering, x, w, b, stride, padding, dilation, groups, spatial: int):
    """conv1d / conv2d (int or string padding) through kiln.conv2d; conv1d has height 1."""
    vx, vw = lw.value(x), lw.value(w)
    if len(shape(vw)) != spatial + 2:
        raise lw.unsupported(f"weight rank {len(shape(vw))} for a {spatial}-d convolution")
    stride, dilation = _tuple(stride, spatial), _tuple(dilation, spatial)
    kernel = shape(vw)[2:]
    if isinstance(padding, str):
        pairs = _string_padding(lw, padding, kernel, dilation, stride)
    else:
        pairs = [(p, p) for p in _tuple(padding, spatial)]
    unbatched = len(shape(vx)) == spatial + 1
    if unbatched:
        vx = reshape(lw, vx, (1,) + shape(vx))
    if spatial == 1:
        vx = reshape(lw, vx, shape(vx)[:2] + (1,) + shape(vx)[2:])
        vw = reshape(lw, vw, shape(vw)[:2] + (1,) + shape(vw)[2:])
        stride, dilation, pairs = (1,) + stride, (1,) + dilation, [(0, 0)] + pairs
    if any(lo != hi for lo, hi in pairs):  # asymmetric 'same': pad explicitly, then convolve
        flat = [p for lo_hi in reversed(pairs) for p in lo_hi]
        vx = pad_constant(lw, vx, flat, 0)
        pairs = [(0, 0)] * len(pairs)
    out = lw.emit(Conv2dOp.make(vx, vw, lw.value(b) if b is not None else None, stride=stride,
                                padding=tuple(lo for lo, _ in pairs), dilation=dilation, groups=int(groups)))
    return reshape(lw, out, lw.out_shape())


@converts(aten.conv1d.default, aten.conv1d.padding)
def _conv1d(lw: Lowering, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(lw, x, w, b, stride, padding, dilation, groups, spatial=1)


@converts(aten.conv2d.padding)
def _conv2d_padding(lw: Lowering, x, w, b=None, stride=1, padding="valid", dilation=1, groups=1):
    return _conv(lw, x, w, b, stride, padding, dilation, groups, spatial=2)


@converts(aten.group_norm.default)
def _group_norm(lw: Lowering, x, groups, w=None, b=None, eps=1e-5, cudnn_enabled=True):
    """Normalize each group with kiln.layer_norm (no affine), then the per-channel affine."""
    vx = lw.value(x)
    size = shape(vx)
    n, c = size[0], size[1]
    if c % groups:
        raise lw.unsupported(f"{c} channels do not split into {groups} groups")
    grouped = reshape(lw, vx, (n, int(groups), numel(size) // (n * groups)))
    normed = reshape(lw, lw.emit(LayerNormOp.make(grouped, None, None, eps=float(eps), ndims=1)), size)
    per_channel = (c,) + (1,) * (len(size) - 2)
    if w is not None:
        normed = binary(lw, "mul", normed, reshape(lw, lw.value(w), per_channel))
    if b is not None:
        normed = binary(lw, "add", normed, reshape(lw, lw.value(b), per_channel))
    return normed


@converts(aten.avg_pool2d.default)
def _avg_pool2d(lw: Lowering, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    """Average pooling; `ceil_mode` only where it changes nothing or makes one global window."""
    if divisor_override is not None:
        raise lw.unsupported("avg_pool2d with divisor_override")
    vx = lw.value(x)
    h, w = shape(vx)[2:]
    k = _tuple(kernel, 2)
    s = _tuple(stride, 2) if stride else k
    p = _tuple(padding, 2)
    out = lw.out_shape()[2:]
    floor_out = tuple((n + 2 * pd - kd) // sd + 1 for n, pd, kd, sd in zip((h, w), p, k, s))
    if ceil_mode and out != floor_out:
        if out == (1, 1) and p == (0, 0) and k[0] >= h and k[1] >= w:  # one window over everything
            return lw.emit(ReduceOp.make(vx, kind="mean", dims=(2, 3), keepdim=True))
        raise lw.unsupported("avg_pool2d ceil_mode=True with a partial last window")
    if not count_include_pad and p != (0, 0):
        raise lw.unsupported("avg_pool2d with count_include_pad=False and padding")
    return lw.emit(Pool2dOp.make(vx, kind="avg", kernel=k, stride=s, padding=p))
