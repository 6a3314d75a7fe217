"""The table from aten ops to kiln ops: one small converter per aten overload.

A converter takes the `Lowering` and the node's args/kwargs and returns the SSA
value(s) of the node. A converter raises `Unsupported` (through `lw.unsupported`) for
argument combinations kiln does not model; the partitioner then leaves that node to
eager. Adding an op is adding an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from compiler.capture.lowering import Lowering
from ir import dtypes
from ir.ops.attention import AttentionOp
from ir.ops.contraction import Conv2dOp, LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, COMPARE_OPS, UNARY_OPS, CastOp, ClampOp, WhereOp
from ir.ops.moe import TopkOp
from ir.ops.movement import ConcatOp, EmbeddingOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from ir.ops.normalization import BatchNormOp, LayerNormOp, LogSoftmaxOp, RmsNormOp, SoftmaxOp
from ir.ops.pooling import Pool2dOp
from ir.ops.reduction import ReduceOp

aten = torch.ops.aten
Converter = Callable[..., Any]
TABLE: dict[Any, Converter] = {}


def converts(*targets: Any) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for t in targets:
            TABLE[t] = fn
        return fn

    return register


# ---- elementwise ---------------------------------------------------------------------
def _unary(name: str) -> Converter:
    return lambda lw, x, *rest, **kw: lw.emit(UNARY_OPS[name].make(lw.value(x)))


for _name, _targets in {
    "relu": [aten.relu.default],
    "silu": [aten.silu.default],
    "sigmoid": [aten.sigmoid.default],
    "tanh": [aten.tanh.default],
    "exp": [aten.exp.default],
    "log": [aten.log.default],
    "neg": [aten.neg.default],
    "abs": [aten.abs.default],
    "sqrt": [aten.sqrt.default],
    "rsqrt": [aten.rsqrt.default],
    "reciprocal": [aten.reciprocal.default],
    "erf": [aten.erf.default],
    "sin": [aten.sin.default],
    "cos": [aten.cos.default],
    "logical_not": [aten.logical_not.default],
}.items():
    converts(*_targets)(_unary(_name))


@converts(aten.gelu.default)
def _gelu(lw: Lowering, x, approximate: str = "none"):
    return lw.emit(UNARY_OPS["gelu"].make(lw.value(x), approximate=approximate))


def _binary_values(lw: Lowering, a, b):
    """Operands of a binary op; a scalar takes its dtype from the tensor side."""
    if isinstance(a, torch.fx.Node):
        va = lw.value(a)
        return va, lw.value(b, like=va)
    vb = lw.value(b)
    return lw.value(a, like=vb), vb


def _binary(name: str) -> Converter:
    def convert(lw: Lowering, a, b, alpha=1, rounding_mode=None, **kw):
        if rounding_mode is not None:
            raise lw.unsupported(f"rounding_mode={rounding_mode!r}")
        va, vb = _binary_values(lw, a, b)
        if alpha != 1:
            vb = lw.emit(BINARY_OPS["mul"].make(vb, lw.scalar(alpha, vb)))
        return lw.emit(BINARY_OPS[name].make(va, vb))

    return convert


for _name, _targets in {
    "add": [aten.add.Tensor, aten.add.Scalar],
    "sub": [aten.sub.Tensor, aten.sub.Scalar],
    "mul": [aten.mul.Tensor, aten.mul.Scalar],
    "div": [aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode],
    "maximum": [aten.maximum.default],
    "minimum": [aten.minimum.default],
    "logical_and": [aten.logical_and.default],
    "logical_or": [aten.logical_or.default],
}.items():
    converts(*_targets)(_binary(_name))


@converts(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor)
def _pow(lw: Lowering, a, b):
    """An integer pow is taken only with a constant exponent >= 0, which backends compute as
    products (TVM's `power` is float-only and crashed the build); another runs in eager."""
    exponent_ok = isinstance(b, (int, float)) and b >= 0 and float(b).is_integer()
    if not lw.meta().dtype.is_floating_point and not exponent_ok:
        raise lw.unsupported("integer pow needs a constant exponent >= 0")
    return _binary("pow")(lw, a, b)


@converts(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(lw: Lowering, a, b, alpha=1):
    return _binary("sub")(lw, b, a) if alpha == 1 else _unsupported_alpha(lw)


def _unsupported_alpha(lw: Lowering):
    raise lw.unsupported("alpha != 1")


def _compare(name: str) -> Converter:
    def convert(lw: Lowering, a, b):
        va, vb = _binary_values(lw, a, b)
        return lw.emit(COMPARE_OPS[name].make(va, vb))

    return convert


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    converts(getattr(aten, _name).Tensor, getattr(aten, _name).Scalar)(_compare(_name))


@converts(aten.where.self)
def _where(lw: Lowering, cond, a, b):
    va, vb = _binary_values(lw, a, b)
    return lw.emit(WhereOp.make(lw.value(cond), va, vb))


@converts(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(lw: Lowering, x, mask, value):
    vx = lw.value(x)
    return lw.emit(WhereOp.make(lw.value(mask), lw.value(value, like=vx), vx))


@converts(aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default, aten.hardtanh.default,
          aten.relu6.default)
def _clamp(lw: Lowering, x, lo=None, hi=None):
    if lw.node.target is aten.clamp_max.default:
        lo, hi = None, lo
    if lw.node.target is aten.relu6.default:  # F.relu6 (MobileNet's activation) on export
        lo, hi = 0.0, 6.0
    if lw.node.target is aten.hardtanh.default:
        lo, hi = (-1.0 if lo is None else lo), (1.0 if hi is None else hi)
    to_f = lambda v: None if v is None else float(v)  # noqa: E731
    return lw.emit(ClampOp.make(lw.value(x), min=to_f(lo), max=to_f(hi)))


@converts(aten.to.dtype, aten._to_copy.default, aten.to.dtype_layout, aten.type_as.default)
def _cast(lw: Lowering, x, *args, **kwargs):
    dtype = lw.meta().dtype
    vx = lw.value(x)
    if dtypes.dtype_of(vx.type) == dtype:
        return vx
    return lw.emit(CastOp.make(vx, dtype=str(dtype).removeprefix("torch.")))


@converts(aten.clone.default, aten.alias.default, aten.contiguous.default, aten.detach.default,
          aten.lift_fresh_copy.default)
def _identity(lw: Lowering, x, *args, **kwargs):
    return lw.value(x)


@converts(aten.dropout.default)
def _dropout(lw: Lowering, x, p, train):
    if train and p > 0:
        raise lw.unsupported("dropout in training mode")
    return lw.value(x)


# ---- contractions ----------------------------------------------------------------------
@converts(aten.linear.default)
def _linear(lw: Lowering, x, w, b=None):
    return lw.emit(LinearOp.make(lw.value(x), lw.value(w), lw.value(b) if b is not None else None))


@converts(aten.matmul.default, aten.mm.default, aten.bmm.default)
def _matmul(lw: Lowering, a, b):
    va, vb = lw.value(a), lw.value(b)
    if len(dtypes.shape_of(va.type)) < 2 or len(dtypes.shape_of(vb.type)) < 2:
        raise lw.unsupported("matmul with a 1-D operand")
    return lw.emit(MatmulOp.make(va, vb))


@converts(aten.addmm.default)
def _addmm(lw: Lowering, bias, a, b, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        raise lw.unsupported("addmm with beta/alpha != 1")
    mm = lw.emit(MatmulOp.make(lw.value(a), lw.value(b)))
    return lw.emit(BINARY_OPS["add"].make(mm, lw.value(bias)))


@converts(aten.conv2d.default)
def _conv2d(lw: Lowering, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    if isinstance(padding, str):
        raise lw.unsupported(f"padding={padding!r}")
    pair = lambda v: tuple(v) * (2 // len(v)) if isinstance(v, (list, tuple)) else (v, v)  # noqa: E731
    return lw.emit(Conv2dOp.make(
        lw.value(x), lw.value(w), lw.value(b) if b is not None else None,
        stride=pair(stride), padding=pair(padding), dilation=pair(dilation), groups=int(groups),
    ))


# ---- normalization ---------------------------------------------------------------------
@converts(aten.softmax.int, aten._softmax.default)
def _softmax(lw: Lowering, x, dim, *rest):
    return lw.emit(SoftmaxOp.make(lw.value(x), dim=int(dim)))


@converts(aten.log_softmax.int, aten._log_softmax.default)
def _log_softmax(lw: Lowering, x, dim, *rest):
    return lw.emit(LogSoftmaxOp.make(lw.value(x), dim=int(dim)))


@converts(aten.layer_norm.default)
def _layer_norm(lw: Lowering, x, shape, w=None, b=None, eps=1e-5, *rest):
    opt = lambda v: lw.value(v) if v is not None else None  # noqa: E731
    return lw.emit(LayerNormOp.make(lw.value(x), opt(w), opt(b), eps=float(eps), ndims=len(shape)))


@converts(aten.rms_norm.default)
def _rms_norm(lw: Lowering, x, shape, w=None, eps=None):
    eps = torch.finfo(lw.meta().dtype).eps if eps is None else eps
    return lw.emit(RmsNormOp.make(lw.value(x), lw.value(w) if w is not None else None,
                                  eps=float(eps), ndims=len(shape)))


@converts(aten.batch_norm.default)
def _batch_norm(lw: Lowering, x, w, b, mean, var, training, momentum, eps, *rest):
    if training or mean is None or w is None or b is None:
        raise lw.unsupported("batch_norm in training mode or without affine/running stats")
    return lw.emit(BatchNormOp.make(*(lw.value(v) for v in (x, mean, var, w, b)), eps=float(eps)))


@converts(aten._native_batch_norm_legit_no_training.default)
def _batch_norm_legit(lw: Lowering, x, w, b, mean, var, momentum, eps):
    out = lw.emit(BatchNormOp.make(*(lw.value(v) for v in (x, mean, var, w, b)), eps=float(eps)))
    return (out,)


# ---- attention -------------------------------------------------------------------------
@converts(aten.scaled_dot_product_attention.default)
def _sdpa(lw: Lowering, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    if dropout_p:
        raise lw.unsupported("attention dropout")
    if enable_gqa:
        raise lw.unsupported("grouped-query attention (enable_gqa)")
    mask = lw.value(attn_mask) if attn_mask is not None else None
    return lw.emit(AttentionOp.make(lw.value(q), lw.value(k), lw.value(v), mask,
                                    causal=bool(is_causal), scale=None if scale is None else float(scale)))


@converts(aten.embedding.default)
def _embedding(lw: Lowering, w, idx, padding_idx=-1, *rest):
    return lw.emit(EmbeddingOp.make(lw.value(w), lw.value(idx)))


# ---- data movement ---------------------------------------------------------------------
@converts(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.unsqueeze.default,
          aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints,
          aten.unflatten.int)
def _reshape(lw: Lowering, x, *args):
    vx = lw.value(x)
    shape = lw.out_shape()
    return vx if dtypes.shape_of(vx.type) == shape else lw.emit(ReshapeOp.make(vx, shape=shape))


@converts(aten.permute.default)
def _permute(lw: Lowering, x, dims):
    vx = lw.value(x)
    rank = len(dtypes.shape_of(vx.type))
    return lw.emit(PermuteOp.make(vx, dims=tuple(d % rank for d in dims)))


@converts(aten.transpose.int)
def _transpose(lw: Lowering, x, d0, d1):
    vx = lw.value(x)
    rank = len(dtypes.shape_of(vx.type))
    dims = list(range(rank))
    dims[d0 % rank], dims[d1 % rank] = dims[d1 % rank], dims[d0 % rank]
    return lw.emit(PermuteOp.make(vx, dims=tuple(dims)))


@converts(aten.t.default)
def _t(lw: Lowering, x):
    vx = lw.value(x)
    return lw.emit(PermuteOp.make(vx, dims=(1, 0))) if len(dtypes.shape_of(vx.type)) == 2 else vx


@converts(aten.expand.default)
def _expand(lw: Lowering, x, *args, **kw):
    vx = lw.value(x)
    shape = lw.out_shape()
    return vx if dtypes.shape_of(vx.type) == shape else lw.emit(ExpandOp.make(vx, shape=shape))


def _slice_value(lw: Lowering, vx, dim: int, start, end, step):
    size = dtypes.shape_of(vx.type)[dim]
    start, end, _ = slice(start, end, step).indices(size)
    end = max(start, end)
    if (start, end, step) == (0, size, 1):
        return vx
    return lw.emit(SliceOp.make(vx, dim=dim, start=start, end=end, step=int(step)))


@converts(aten.slice.Tensor)
def _slice(lw: Lowering, x, dim=0, start=None, end=None, step=1):
    vx = lw.value(x)
    return _slice_value(lw, vx, dim % len(dtypes.shape_of(vx.type)), start, end, step)


@converts(aten.select.int)
def _select(lw: Lowering, x, dim, index):
    vx = lw.value(x)
    dim = dim % len(dtypes.shape_of(vx.type))
    index = index % dtypes.shape_of(vx.type)[dim]
    sliced = _slice_value(lw, vx, dim, index, index + 1, 1)
    return lw.emit(ReshapeOp.make(sliced, shape=lw.out_shape()))


@converts(aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.unbind.int)
def _split(lw: Lowering, x, arg=None, dim=0):
    vx = lw.value(x)
    rank = len(dtypes.shape_of(vx.type))
    dim = (dim if lw.node.target is not aten.unbind.int else (arg or 0)) % rank
    outs, start = [], 0
    for val in lw.meta():
        size = int(val.shape[dim]) if lw.node.target is not aten.unbind.int else 1
        piece = _slice_value(lw, vx, dim, start, start + size, 1)
        if lw.node.target is aten.unbind.int:
            piece = lw.emit(ReshapeOp.make(piece, shape=tuple(int(d) for d in val.shape)))
        outs.append(piece)
        start += size
    return tuple(outs)


@converts(aten.cat.default)
def _cat(lw: Lowering, xs, dim=0):
    values = [lw.value(x) for x in xs]
    values = [v for v in values if dtypes.numel(v.type) > 0]
    return values[0] if len(values) == 1 else lw.emit(ConcatOp.make(*values, dim=int(dim)))


# ---- reductions and pooling ------------------------------------------------------------
def _reduce(kind: str) -> Converter:
    def convert(lw: Lowering, x, dims=None, keepdim=False, *, dtype=None):
        vx = lw.value(x)
        rank = len(dtypes.shape_of(vx.type))
        dims = tuple(range(rank)) if not dims else tuple(d % rank for d in dims)
        if dtype is not None and dtype != dtypes.dtype_of(vx.type):
            vx = lw.emit(CastOp.make(vx, dtype=str(dtype).removeprefix("torch.")))
        return lw.emit(ReduceOp.make(vx, kind=kind, dims=dims, keepdim=bool(keepdim)))

    return convert


for _kind, _targets in {
    "sum": [aten.sum.dim_IntList, aten.sum.default],
    "mean": [aten.mean.dim, aten.mean.default],
    "max": [aten.amax.default],
    "min": [aten.amin.default],
}.items():
    converts(*_targets)(_reduce(_kind))


@converts(aten.max_pool2d.default, aten.avg_pool2d.default)
def _pool2d(lw: Lowering, x, kernel, stride=None, padding=0, *rest):
    kind = "max" if lw.node.target is aten.max_pool2d.default else "avg"
    if kind == "max" and len(rest) >= 1 and rest[0] not in (1, [1, 1], (1, 1)):
        raise lw.unsupported("max_pool2d with dilation")
    ceil_mode = rest[1] if kind == "max" and len(rest) > 1 else (rest[0] if kind == "avg" and rest else False)
    if ceil_mode:
        raise lw.unsupported("ceil_mode=True")
    if kind == "avg" and len(rest) >= 2 and (not rest[1] or (len(rest) > 2 and rest[2] is not None)):
        raise lw.unsupported("avg_pool2d with count_include_pad=False or divisor_override")
    pair = lambda v: tuple(v) * (2 // len(v)) if isinstance(v, (list, tuple)) else (v, v)  # noqa: E731
    stride = pair(stride) if stride else pair(kernel)
    return lw.emit(Pool2dOp.make(lw.value(x), kind=kind, kernel=pair(kernel), stride=stride, padding=pair(padding)))


@converts(aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool2d(lw: Lowering, x, output_size):
    vx = lw.value(x)
    n, c, h, w = dtypes.shape_of(vx.type)
    oh, ow = output_size
    if (oh, ow) == (1, 1):
        return lw.emit(ReduceOp.make(vx, kind="mean", dims=(2, 3), keepdim=True))
    if h % oh or w % ow:
        raise lw.unsupported(f"adaptive pooling {h}x{w} -> {oh}x{ow} is not a uniform window")
    k = (h // oh, w // ow)
    return lw.emit(Pool2dOp.make(vx, kind="avg", kernel=k, stride=k, padding=(0, 0)))


# ---- routing ---------------------------------------------------------------------------
@converts(aten.topk.default)
def _topk(lw: Lowering, x, k, dim=-1, largest=True, sorted=True):
    op = TopkOp.make(lw.value(x), k=int(k), dim=int(dim), largest=bool(largest))
    lw.block.add_op(op)
    return (op.values, op.indices)


from compiler.capture import table_extra  # noqa: E402,F401  (registers more converters; imports this module)
