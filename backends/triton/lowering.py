"""Kiln ops as Triton expressions at an index: the table every template's `value` uses.

Elementwise ops are data: one format string per op over its (already cast) operands, so a
new activation is one line in `UNARY`. Data-movement ops only rewrite the index (see
`emitter.py`). `kiln.dequantize` decodes packed codes at the index (`dequant.py`). Ops
not in `RULES` cannot be inside a Triton kernel; their group is split and they run
through the reference implementation.

Math follows the interpreter-safe subset of `triton.language` (no libdevice: the CPU
interpreter cannot call it): tanh is written through sigmoid, a general pow through
exp2/log2 with the sign of odd integer powers restored.
"""

from __future__ import annotations

import math

import torch
from xdsl.ir import Operation

from backends.triton.dequant import dequant_rule
from backends.triton.emitter import (
    ZERO,
    Expr,
    Idx,
    KernelEmitter,
    PullRule,
    TemplateMismatch,
    cast,
    dtype_of,
    literal,
    shape_of,
    union,
)
from ir.core import normalize_dim
from ir.ops.elementwise import result_dtype

UNARY: dict[str, str] = {
    "kiln.relu": "tl.maximum({a}, 0)",
    "kiln.silu": "{a} * tl.sigmoid({a})",
    "kiln.sigmoid": "tl.sigmoid({a})",
    "kiln.tanh": "2.0 * tl.sigmoid(2.0 * {a}) - 1.0",
    "kiln.exp": "tl.exp({a})",
    "kiln.log": "tl.log({a})",
    "kiln.neg": "-{a}",
    "kiln.abs": "tl.abs({a})",
    "kiln.sqrt": "tl.sqrt({a})",
    "kiln.rsqrt": "tl.rsqrt({a})",
    "kiln.reciprocal": "1.0 / {a}",
    "kiln.erf": "tl.erf({a})",
    "kiln.sin": "tl.sin({a})",
    "kiln.cos": "tl.cos({a})",
    "kiln.logical_not": "{a} == 0",
}
GELU = {
    "none": "0.5 * {a} * (1.0 + tl.erf({a} * 0.7071067811865476))",
    # 0.5 * (1 + tanh(z)) == sigmoid(2z), with z = sqrt(2/pi) * (a + 0.044715 a^3)
    "tanh": "{a} * tl.sigmoid(1.5957691216057308 * ({a} + 0.044715 * {a} * {a} * {a}))",
}
BINARY: dict[str, str] = {
    "kiln.add": "{a} + {b}",
    "kiln.sub": "{a} - {b}",
    "kiln.mul": "{a} * {b}",
    "kiln.div": "{a} / {b}",
    "kiln.maximum": "tl.maximum({a}, {b})",
    "kiln.minimum": "tl.minimum({a}, {b})",
    # Through int8: the interpreter cannot `&` a broadcast i1 scalar with an i1 block.
    "kiln.logical_and": "({a}.to(tl.int8) & {b}.to(tl.int8)) != 0",
    "kiln.logical_or": "({a}.to(tl.int8) | {b}.to(tl.int8)) != 0",
    "kiln.eq": "{a} == {b}",
    "kiln.ne": "{a} != {b}",
    "kiln.lt": "{a} < {b}",
    "kiln.le": "{a} <= {b}",
    "kiln.gt": "{a} > {b}",
    "kiln.ge": "{a} >= {b}",
}
COMPARE = {"kiln.eq", "kiln.ne", "kiln.lt", "kiln.le", "kiln.gt", "kiln.ge"}
LOGICAL = {"kiln.logical_and", "kiln.logical_or", "kiln.logical_not"}
# pow with a literal exponent: cheap and exact forms.
POW_BY_EXPONENT = {
    1.0: "{a}",
    2.0: "{a} * {a}",
    3.0: "{a} * {a} * {a}",
    0.5: "tl.sqrt({a})",
    -0.5: "tl.rsqrt({a})",
    -1.0: "1.0 / {a}",
    -2.0: "1.0 / ({a} * {a})",
}
# |a|^b through exp2/log2; a negative base keeps torch's sign for integer b and is nan otherwise.
GENERAL_POW = (
    "tl.where({b} == 0, 1.0, tl.where({a} < 0, tl.where(tl.floor({b}) == {b}, "
    'tl.where(tl.floor({b} * 0.5) * 2.0 != {b}, -1.0, 1.0), float("nan")), 1.0)'
    " * tl.exp2({b} * tl.log2(tl.abs({a}))))"
)


def _operand_dtype(op: Operation) -> torch.dtype:
    """The dtype an elementwise op computes in (its operands are cast to it)."""
    if op.name in COMPARE:
        return result_dtype(op.operands[0].type, op.operands[1].type)
    if op.name in LOGICAL:
        return torch.bool
    return dtype_of(op.results[0])


def _operands(em: KernelEmitter, op: Operation, idx: Idx, dtypes: list[torch.dtype]) -> list[Expr]:
    out = []
    for operand, dt in zip(op.operands, dtypes):
        expr = em.value(operand, em.broadcast(idx, shape_of(operand)))
        out.append(cast(expr, dtype_of(operand), dt))
    return out


def _finish(em: KernelEmitter, op: Operation, text: str, args: list[Expr]) -> Expr:
    if args and all(a.is_literal for a in args):  # fold: every operand is a literal
        tensors = [torch.tensor(a.value, dtype=dtype_of(o)) for a, o in zip(args, op.operands)]
        return literal(op.reference(*tensors).item(), dtype_of(op.results[0]))  # type: ignore[union-attr]
    return em.var(text, union(*args))


def _fmt(template: str) -> PullRule:
    def rule(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
        dt = _operand_dtype(op)
        args = _operands(em, op, idx, [dt] * len(op.operands))
        names = dict(zip("ab", (a.text for a in args)))
        return _finish(em, op, template.format(**names), args)

    return rule


def _gelu(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    args = _operands(em, op, idx, [dtype_of(op.results[0])])
    return _finish(em, op, GELU[op.opt("approximate", "none")].format(a=args[0]), args)


def _pow(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    dt = dtype_of(op.results[0])
    a, b = _operands(em, op, idx, [dt, dt])
    if b.is_literal and float(b.value) in POW_BY_EXPONENT:  # type: ignore[arg-type]
        return _finish(em, op, POW_BY_EXPONENT[float(b.value)].format(a=a), [a, b])  # type: ignore[arg-type]
    if not dt.is_floating_point:
        raise TemplateMismatch(f"{op.name}: integer pow with exponent {b} has no Triton form here")
    if a.is_literal and not b.is_literal and float(a.value) > 0:  # type: ignore[arg-type]
        return _finish(em, op, f"tl.exp2({b} * {math.log2(float(a.value))!r})", [a, b])  # type: ignore[arg-type]
    if a.is_literal or b.is_literal:
        raise TemplateMismatch(
            f"{op.name}: pow({a}, {b}) with a literal operand has no Triton form here"
        )
    return _finish(em, op, GENERAL_POW.format(a=a, b=b), [a, b])


def _where(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    dt = dtype_of(op.results[0])
    c, a, b = _operands(em, op, idx, [torch.bool, dt, dt])
    return _finish(em, op, f"tl.where({c}, {a}, {b})", [c, a, b])


def _cast(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    src = op.operands[0]
    expr = cast(em.value(src, idx), dtype_of(src), dtype_of(op.results[0]))
    return expr if expr.is_literal or expr.text.isidentifier() else em.var(expr.text, expr.masks)


def _clamp(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    dt = dtype_of(op.results[0])
    (x,) = _operands(em, op, idx, [dt])
    lo, hi = op.opt("min"), op.opt("max")
    if not dt.is_floating_point:  # float bounds of an integer clamp round inwards, as torch does
        lo = None if lo is None else -int(-lo // 1)
        hi = None if hi is None else int(hi // 1)
    text = x.text
    if lo is not None:
        text = f"tl.maximum({text}, {literal(lo, dt)})"
    if hi is not None:
        text = f"tl.minimum({text}, {literal(hi, dt)})"
    return _finish(em, op, text, [x])


def _batch_norm(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    dt = dtype_of(op.results[0])
    x = cast(em.value(op.operands[0], idx), dtype_of(op.operands[0]), dt)
    channel = em.dims_of(idx)[1]
    mean, var, w, b = (
        cast(em.value(o, Idx(shape_of(o), dims=(channel,))), dtype_of(o), dt)
        for o in op.operands[1:]
    )
    eps = literal(op.opt("eps"), dt)
    return em.var(
        f"({x} - {mean}) * tl.rsqrt({var} + {eps}) * {w} + {b}", union(x, mean, var, w, b)
    )


# ---- data movement: rewrite the index, compute nothing ----------------------------------
def _reshape(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    return em.value(op.operands[0], Idx(shape_of(op.operands[0]), flat=em.flat_of(idx)))


def _permute(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    dims = em.dims_of(idx)
    src: list[Expr] = [ZERO] * len(dims)
    for k, p in enumerate(op.opt("dims")):
        src[p] = dims[k]
    return em.value(op.operands[0], Idx(shape_of(op.operands[0]), dims=tuple(src)))


def _expand(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    return em.value(op.operands[0], em.broadcast(idx, shape_of(op.operands[0])))


def _offset(em: KernelEmitter, d: Expr, scale: int, shift: int) -> Expr:
    if d.is_literal:
        return literal(int(d.value) * scale + shift, torch.int64)  # type: ignore[arg-type]
    text = d.text if scale == 1 else f"{d} * {scale}"
    text = text if shift == 0 else f"{text} + {shift}" if shift > 0 else f"{text} - {-shift}"
    return d if text == d.text else em.var(text, d.masks, prefix="i")


def _slice(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    src_shape = shape_of(op.operands[0])
    dim = normalize_dim(op.opt("dim"), len(src_shape))
    dims = list(em.dims_of(idx))
    dims[dim] = _offset(em, dims[dim], op.opt("step"), op.opt("start"))
    return em.value(op.operands[0], Idx(src_shape, dims=tuple(dims)))


def _concat(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    """Each input is read under the predicate that selects it, so no load leaves its bounds."""
    dims = em.dims_of(idx)
    dim = normalize_dim(op.opt("dim"), len(dims))
    d, bounds, lo = dims[dim], [], 0
    for operand in op.operands:
        bounds.append((lo, lo + shape_of(operand)[dim]))
        lo += shape_of(operand)[dim]
    if len(op.operands) == 1:
        return em.value(op.operands[0], Idx(shape_of(op.operands[0]), dims=dims))
    if d.is_literal:
        j = next(j for j, (a, b) in enumerate(bounds) if a <= d.value < b)  # type: ignore[operator]
        sub = dims[:dim] + (_offset(em, d, 1, -bounds[j][0]),) + dims[dim + 1 :]
        return em.value(op.operands[j], Idx(shape_of(op.operands[j]), dims=sub))
    parts = []
    for j, (operand, (a, b)) in enumerate(zip(op.operands, bounds)):
        conds = ([f"({d} >= {a})"] if j > 0 else []) + (
            [f"({d} < {b})"] if j < len(bounds) - 1 else []
        )
        sub = dims[:dim] + (_offset(em, d, 1, -a),) + dims[dim + 1 :]
        with em.predicate(" & ".join(conds)):
            parts.append(em.value(operand, Idx(shape_of(operand), dims=sub)))
    text = parts[-1].text
    for part, (_, b) in zip(reversed(parts[:-1]), reversed(bounds[:-1])):
        text = f"tl.where({d} < {b}, {part}, {text})"
    return em.var(text, union(d, *parts))


def _embedding(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    weight, ids = op.operands
    dims = em.dims_of(idx)
    row = em.value(ids, Idx(shape_of(ids), dims=dims[:-1]))
    return em.value(weight, Idx(shape_of(weight), dims=(row, dims[-1])))


RULES: dict[str, PullRule] = {
    **{name: _fmt(t) for name, t in UNARY.items()},
    **{name: _fmt(t) for name, t in BINARY.items()},
    "kiln.gelu": _gelu,
    "kiln.pow": _pow,
    "kiln.where": _where,
    "kiln.cast": _cast,
    "kiln.clamp": _clamp,
    "kiln.batch_norm": _batch_norm,
    "kiln.reshape": _reshape,
    "kiln.permute": _permute,
    "kiln.expand": _expand,
    "kiln.slice": _slice,
    "kiln.concat": _concat,
    "kiln.embedding": _embedding,
    "kiln.dequantize": dequant_rule,  # packed weights decoded where they are read (dequant.py)
}
POINTWISE_OPS = frozenset(RULES)
MOVEMENT_OPS = frozenset(
    {"kiln.reshape", "kiln.permute", "kiln.expand", "kiln.slice", "kiln.concat", "kiln.embedding"}
)
