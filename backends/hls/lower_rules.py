"""The lowering rule of each kiln op the HLS backend emits: the op's layer and its types.

Each rule reads the op's operands from the `Lowering` (activations, constants), decides
the layer's types (`precision.py`) and appends the layer; `RULES` maps op names to rules,
so supporting an op is one function and one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from xdsl.ir import Operation

from backends.hls import layers as L
from backends.hls import precision as P
from ir import dtypes
from ir.quant import to_rows
from ir.quant.fixed import FixedPoint

if TYPE_CHECKING:
    from backends.hls.lower import ConstVal, Lowering


def _weight_type(lw: Lowering, op: Operation, w: ConstVal, values: torch.Tensor, axis: int) -> tuple[FixedPoint, bool]:
    """(type of the stored weight, whether a decision chose it)."""
    if w.fmt is not None:
        return w.fmt, True
    d = lw.decision(op)
    if d is None:
        return lw.config.precision, False
    rows = to_rows(values.reshape(values.shape[0], -1), axis)
    return lw.fixed_format(op, str(d["format"]), rows), True


def _act_input(lw: Lowering, op: Operation) -> L.Tensor:
    """The activation operand, in the decision's activation format when it names one."""
    d = lw.decision(op)
    lw.act(op, op.operands[0])
    if d and d.get("act_format"):
        return lw.typed(op, op.operands[0], lw.act_format(op, str(d["act_format"])))
    return lw.act(op, op.operands[0])


def _fold_batch_norm(lw: Lowering, op: Operation, w: torch.Tensor, b: torch.Tensor | None):
    """(weight, bias) with a following batch norm folded in, when there is one to fold."""
    result = op.results[0]
    uses = list(result.uses)
    if len(uses) != 1 or uses[0].operation.name != "kiln.batch_norm" or uses[0].index != 0:
        return w, b
    bn = uses[0].operation
    rank = len(dtypes.shape_of(result.type))
    if op.name == "kiln.linear" and rank != 2:
        return w, b  # batch norm normalizes dim 1, which is not a linear's feature dim here
    stats = [lw.const(v) for v in bn.operands[1:]]
    if any(s is None for s in stats):
        return w, b
    mean, var, gamma, beta = (s.values.to(torch.float64) for s in stats)  # type: ignore[union-attr]
    scale = gamma / torch.sqrt(var + bn.opt("eps"))
    w = w.to(torch.float64) * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b0 = b.to(torch.float64) if b is not None else torch.zeros_like(mean)
    lw.folded[bn] = result
    lw.notes.append(f"{lw.where(bn)} folded into {lw.where(op)}")
    return w, (b0 - mean) * scale + beta


def _mac_types(lw: Lowering, op: Operation, x: L.Tensor, w: torch.Tensor, b: torch.Tensor | None,
               wtype: FixedPoint, decided: bool, prefix: str):
    weight = P.make_const(f"{prefix}_w", w.reshape(w.shape[0], -1), wtype)
    bias = None
    if b is not None:
        btype = P.const_type(b) if decided else lw.config.precision
        bias = P.make_const(f"{prefix}_b", b, btype)
    frac = max(x.type.frac_bits + wtype.frac_bits, bias.type.frac_bits if bias else 0)
    bound = (weight.values().abs().sum(1) * P.max_abs(x.type)
             + (bias.values().abs() if bias is not None else 0)).max()
    return weight, bias, P.acc_type(float(bound), frac, lw.where(op))


def _linear(lw: Lowering, op: Operation) -> None:
    x = _act_input(lw, op)
    shape = lw.per_sample(op, op.results[0])
    wv = lw.const(op.operands[1])
    if wv is None:
        raise lw.fail(op, "has an activation as its weight; the HLS backend stores weights as constants")
    bv = lw.const(op.operands[2]) if len(op.operands) > 2 else None
    w, b = wv.values, bv.values if bv is not None else None
    if wv.fmt is None:
        w, b = _fold_batch_norm(lw, op, w, b)
    wtype, decided = _weight_type(lw, op, wv, w, 1)
    prefix = f"l{len(lw.layers)}"
    weight, bias, acc = _mac_types(lw, op, x, w, b, wtype, decided, prefix)
    lw.new_layer(L.Dense, op, [x], shape, weight=weight, bias=bias, acc=acc,
                 reuse=lw.reuse(op, weight.numel))


def _conv2d(lw: Lowering, op: Operation) -> None:
    if op.opt("groups") != 1:
        raise lw.fail(op, f"has groups={op.opt('groups')}; the HLS backend emits groups=1 convolutions")
    x = _act_input(lw, op)
    shape = lw.per_sample(op, op.results[0])
    wv = lw.const(op.operands[1])
    if wv is None:
        raise lw.fail(op, "has an activation as its weight; the HLS backend stores weights as constants")
    bv = lw.const(op.operands[2]) if len(op.operands) > 2 else None
    w, b = wv.values, bv.values if bv is not None else None
    if wv.fmt is None:
        w, b = _fold_batch_norm(lw, op, w, b)
    wtype, decided = _weight_type(lw, op, wv, w, 1)
    prefix = f"l{len(lw.layers)}"
    weight, bias, acc = _mac_types(lw, op, x, w, b, wtype, decided, prefix)
    lw.new_layer(L.Conv2d, op, [x], shape, weight=weight, bias=bias, acc=acc,
                 reuse=lw.reuse(op, weight.numel), kernel=tuple(w.shape[2:]), stride=op.opt("stride"),
                 padding=op.opt("padding"), dilation=op.opt("dilation"))


def _matmul(lw: Lowering, op: Operation) -> None:
    rhs = lw.const(op.operands[1])
    shape = lw.per_sample(op, op.results[0])
    if rhs is not None:  # x @ W with a constant W [K, N]: a dense layer with weight W^T
        if rhs.values.dim() != 2:
            raise lw.fail(op, "multiplies by a constant of rank > 2; the HLS backend takes [K, N] weights")
        x = _act_input(lw, op)
        w = rhs.values.T.contiguous()
        wtype, decided = _weight_type(lw, op, rhs, w, 1)
        prefix = f"l{len(lw.layers)}"
        weight, bias, acc = _mac_types(lw, op, x, w, None, wtype, decided, prefix)
        lw.new_layer(L.Dense, op, [x], shape, weight=weight, bias=bias, acc=acc,
                     reuse=lw.reuse(op, weight.numel))
        return
    a, b = lw.act(op, op.operands[0]), lw.act(op, op.operands[1])
    if len(b.shape) != 2 and b.shape[:-2] != a.shape[:-2]:
        raise lw.fail(op, f"broadcasts batch dims {a.shape[:-2]} against {b.shape[:-2]}; the HLS backend "
                      "multiplies equal batch dims or a shared [K, N] operand")
    k = a.shape[-1]
    bound = k * P.max_abs(a.type) * P.max_abs(b.type)
    acc = P.acc_type(bound, a.type.frac_bits + b.type.frac_bits, lw.where(op))
    lw.new_layer(L.Matmul, op, [a, b], shape, acc=acc, reuse=lw.reuse(op, k * b.shape[-1]))


def _attention(lw: Lowering, op: Operation) -> None:
    if len(op.operands) > 3:
        raise lw.fail(op, "has a mask operand; the HLS backend emits unmasked or causal attention")
    q, k, v = (lw.act(op, x) for x in op.operands[:3])
    shape = lw.per_sample(op, op.results[0])
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise lw.fail(op, "broadcasts batch dims; the HLS backend needs q, k and v with equal batch dims")
    d, s = q.shape[-1], k.shape[-2]
    scale = op.opt("scale")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    name = f"l{len(lw.layers)}"
    c = P.make_const(f"{name}_scale", torch.tensor([scale]), P.auto_type(torch.tensor([scale]), 12))
    where = lw.where(op)
    score_acc = P.acc_type(d * P.max_abs(q.type) * P.max_abs(k.type), q.type.frac_bits + k.type.frac_bits, where)
    P.check_bits(score_acc.width + c.type.width, where, "the scaled score")
    bound = float(2.0 ** (score_acc.int_bits - 1)) * abs(scale)
    score = FixedPoint(math.floor(math.log2(bound)) + 2 + 10, math.floor(math.log2(bound)) + 2)
    prob = FixedPoint(18, 2, True, "AP_RND_CONV", "AP_SAT")
    out_acc = P.acc_type(s * P.max_abs(prob) * P.max_abs(v.type), prob.frac_bits + v.type.frac_bits, where)
    tables = P.softmax_tables(name, score, lw.config.table_size)
    lw.new_layer(L.Attention, op, [q, k, v], shape, scale=c, score_acc=score_acc, score=score, prob=prob,
                 out_acc=out_acc, tables=tables, causal=bool(op.opt("causal")),
                 reuse=lw.reuse(op, s * d + s * v.shape[-1]))


def _softmax(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    if op.opt("dim") % (len(shape) + 1) != len(shape):
        raise lw.fail(op, f"normalizes dim {op.opt('dim')}; the HLS backend emits softmax over the last dim")
    tables = P.softmax_tables(f"l{len(lw.layers)}", x.type, lw.config.table_size)
    lw.new_layer(L.Softmax, op, [x], shape, tables=tables)


def _layer_norm(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    n = math.prod(shape[-op.opt("ndims"):])
    name = f"l{len(lw.layers)}"
    segments = op.properties.get("operandSegmentSizes")
    present = list(segments.get_values())[1:] if segments is not None else [0, 0]  # type: ignore[union-attr]
    rest = iter(op.operands[1:])
    gamma = lw.const(next(rest)) if present[0] else None
    beta = lw.const(next(rest)) if present[1] else None
    g = P.make_const(f"{name}_gamma", gamma.values.reshape(-1), P.const_type(gamma.values)) if gamma else None
    b = P.make_const(f"{name}_beta", beta.values.reshape(-1), P.const_type(beta.values)) if beta else None
    rsqrt, bits = P.rsqrt_table(f"{name}_rsqrt", lw.config.table_size)
    layer_shape = (*shape[: len(shape) - op.opt("ndims")], n)
    where = lw.where(op)
    guard = 2
    P.check_bits(x.type.width + guard + rsqrt.type.width + (g.type.width if g else 1), where, "d * rstd * gamma")
    d_bits = x.type.width + guard
    P.check_bits(2 * d_bits + (n - 1).bit_length(), where, "the sum of squares")
    var_shift = max(0, 2 * d_bits + 18 - 62)
    var_shift += var_shift % 2  # the rsqrt table needs an even number of fractional bits
    x_row = L.Tensor(x.name, layer_shape, x.type) if layer_shape != x.shape else x
    layer = lw.new_layer(L.LayerNorm, op, [x_row], layer_shape, gamma=g, beta=b, rsqrt=rsqrt,
                         rsqrt_bits=bits, eps=float(op.opt("eps")), guard=guard, inv_n_frac=17,
                         var_shift=var_shift)
    layer.output.shape = shape


def _batch_norm(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    mean, var, gamma, beta = (lw.const(v) for v in op.operands[1:])
    if any(s is None for s in (mean, var, gamma, beta)):
        raise lw.fail(op, "has statistics that are not constants")
    scale = gamma.values.double() / torch.sqrt(var.values.double() + op.opt("eps"))  # type: ignore[union-attr]
    shift = beta.values.double() - mean.values.double() * scale  # type: ignore[union-attr]
    name = f"l{len(lw.layers)}"
    lw.new_layer(L.ScaleShift, op, [x], shape, scale=P.make_const(f"{name}_scale", scale, P.const_type(scale)),
                 shift=P.make_const(f"{name}_shift", shift, P.const_type(shift)), axis=0)


def _unary(function: str) -> Callable[[Lowering, Operation], None]:
    def rule(lw: Lowering, op: Operation) -> None:
        x = lw.act(op, op.operands[0])
        shape = lw.per_sample(op, op.results[0])
        if function == "relu":
            lw.new_layer(L.Relu, op, [x], shape)
            return
        fn = function
        if fn == "gelu" and op.opt("approximate", "none") == "tanh":
            fn = "gelu_tanh"
        table, shift, gated = P.lut_table(f"l{len(lw.layers)}_table", fn, lw.config.table_size, x.type)
        lw.new_layer(L.Lut, op, [x], shape, function=fn, table=table, shift=shift, gated=gated)

    return rule


def _binary(kind: str) -> Callable[[Lowering, Operation], None]:
    def rule(lw: Lowering, op: Operation) -> None:
        shape = lw.per_sample(op, op.results[0])
        a_c, b_c = lw.const(op.operands[0]), lw.const(op.operands[1])
        name = f"l{len(lw.layers)}"
        if a_c is None and b_c is None:
            a, b = lw.act(op, op.operands[0]), lw.act(op, op.operands[1])
            if kind == "div" or a.shape != b.shape:
                raise lw.fail(op, f"combines activations of shapes {list(a.shape)} and {list(b.shape)}"
                              + (" by division" if kind == "div" else ""),
                              "the HLS backend emits add/sub/mul of equal shapes, or with a constant")
            lw.new_layer(L.Binary, op, [a, b], shape, fn=kind)
            return
        if a_c is not None and kind in ("sub", "div"):
            raise lw.fail(op, f"has a constant left operand of {kind}; the HLS backend emits x {kind} c")
        x = lw.act(op, op.operands[1] if a_c is not None else op.operands[0])
        c = (a_c or b_c).values.to(torch.float64)  # type: ignore[union-attr]
        full = torch.broadcast_to(c, (lw.batch, *shape))
        if lw.batch > 1 and not bool((full == full[:1]).all()):
            raise lw.fail(op, "has a constant that differs between samples; the HLS design runs one sample per call")
        full = full[0].contiguous()
        kind_ = "mul" if kind == "div" else kind
        if kind == "div":
            full = 1.0 / full
        other = P.make_const(f"{name}_c", full.reshape(-1), P.auto_type(full, 18))
        lw.new_layer(L.Binary, op, [x], shape, fn=kind_, other=other)

    return rule


def _pool2d(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    kernel = op.opt("kernel")
    window = kernel[0] * kernel[1]
    lw.new_layer(L.Pool2d, op, [x], shape, mode=op.opt("kind"), kernel=kernel, stride=op.opt("stride"),
                 padding=op.opt("padding"), inv_frac=17 + (window - 1).bit_length())


def _reduce(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    rank = len(x.shape) + 1
    dims = sorted({d % rank for d in op.opt("dims")})
    if 0 in dims or op.opt("kind") not in ("sum", "mean", "max"):
        raise lw.fail(op, f"reduces {op.opt('kind')} over dims {dims}; the HLS backend reduces sum, mean or "
                      "max within a sample (not over the batch dim)")
    count = math.prod(x.shape[d - 1] for d in dims)
    lw.new_layer(L.Reduce, op, [x], shape, mode=op.opt("kind"), dims=tuple(d - 1 for d in dims),
                 inv_frac=17 + (count - 1).bit_length())


def _reshape(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    lw.env[op.results[0]] = L.Tensor(x.name, shape, x.type)


def _permute(lw: Lowering, op: Operation) -> None:
    x = lw.act(op, op.operands[0])
    shape = lw.per_sample(op, op.results[0])
    dims = op.opt("dims")
    if dims[0] != 0:
        raise lw.fail(op, f"permutes the batch dim ({list(dims)}); the HLS design runs one sample per call")
    lw.new_layer(L.Transpose, op, [x], shape, perm=tuple(d - 1 for d in dims[1:]))


RULES: dict[str, Callable[[Lowering, Operation], None]] = {
    "kiln.linear": _linear,
    "kiln.conv2d": _conv2d,
    "kiln.matmul": _matmul,
    "kiln.attention": _attention,
    "kiln.softmax": _softmax,
    "kiln.layer_norm": _layer_norm,
    "kiln.batch_norm": _batch_norm,
    "kiln.relu": _unary("relu"),
    "kiln.gelu": _unary("gelu"),
    "kiln.silu": _unary("silu"),
    "kiln.sigmoid": _unary("sigmoid"),
    "kiln.tanh": _unary("tanh"),
    "kiln.add": _binary("add"),
    "kiln.sub": _binary("sub"),
    "kiln.mul": _binary("mul"),
    "kiln.div": _binary("div"),
    "kiln.pool2d": _pool2d,
    "kiln.reduce": _reduce,
    "kiln.reshape": _reshape,
    "kiln.permute": _permute,
}

SUPPORTED = frozenset(RULES) | {"kiln.param", "kiln.constant", "kiln.quantize", "kiln.dequantize"}
