"""More aten converters, each expressed through existing kiln ops so every backend gets it.

Real HF models sent these ops to eager (issue 9): bool `&`/`|` on attention masks,
`to.device` to the same device, advanced indexing (`x[arange, argmax]`, bert's mask
`index.Tensor`), `gather`, integer `cumsum` (RoBERTa's position ids), `argmax`,
`zeros_like` and friends, `stack`. None needs a new kiln op: a gather is a row
`kiln.embedding` over a flattened table with a computed linear index, `cumsum` a masked
sum against a triangular constant, `argmax` the smallest index where the max is hit.
Combinations these forms do not model are declined with `lw.unsupported`, and the node
falls back.

Padding, pooling, convolutions and group norm are in `table_spatial.py`; recurrent
layers (`aten.lstm.input`, `aten.gru.input`) are unrolled in `table_rnn.py`. All register
into `table.TABLE` on import (table.py imports this module last, this one imports them).
"""

from __future__ import annotations

import torch
from xdsl.ir import SSAValue

from compiler.capture.lowering import Lowering
from compiler.capture.table import _compare, converts
from ir import dtypes
from ir.ops.elementwise import BINARY_OPS, COMPARE_OPS, UNARY_OPS, CastOp, WhereOp
from ir.ops.movement import ConcatOp, EmbeddingOp, ExpandOp, PermuteOp, ReshapeOp
from ir.ops.reduction import ReduceOp
from ir.ops.sources import ConstantOp

aten = torch.ops.aten
MAX_CUMSUM = 1024  # the masked-sum form is n^2 along the scanned dim


# ---- small helpers -----------------------------------------------------------------------
def shape(v: SSAValue) -> tuple[int, ...]:
    return tuple(dtypes.shape_of(v.type))


def const(lw: Lowering, tensor: torch.Tensor) -> SSAValue:
    return lw.emit(ConstantOp.of(tensor))


def full(lw: Lowering, value: bool | int | float, size: tuple[int, ...], dtype: torch.dtype) -> SSAValue:
    """A tensor of one value: a rank-0 constant broadcast (never a big inline literal)."""
    scalar = const(lw, torch.tensor(value, dtype=dtype))
    return scalar if not size else lw.emit(ExpandOp.make(scalar, shape=tuple(size)))


def binary(lw: Lowering, name: str, a: SSAValue, b: SSAValue) -> SSAValue:
    return lw.emit(BINARY_OPS[name].make(a, b))


def reshape(lw: Lowering, v: SSAValue, size: tuple[int, ...]) -> SSAValue:
    return v if shape(v) == tuple(size) else lw.emit(ReshapeOp.make(v, shape=tuple(size)))


def permute(lw: Lowering, v: SSAValue, dims: tuple[int, ...]) -> SSAValue:
    return v if tuple(dims) == tuple(range(len(dims))) else lw.emit(PermuteOp.make(v, dims=tuple(dims)))


def cast(lw: Lowering, v: SSAValue, dtype: torch.dtype) -> SSAValue:
    if dtypes.dtype_of(v.type) == dtype:
        return v
    return lw.emit(CastOp.make(v, dtype=str(dtype).removeprefix("torch.")))


def numel(size: tuple[int, ...]) -> int:
    n = 1
    for d in size:
        n *= d
    return n


def wrap_negative(lw: Lowering, idx: SSAValue, size: int) -> SSAValue:
    """Python-style negative indices: `idx < 0 ? idx + size : idx`."""
    dt = dtypes.dtype_of(idx.type)
    negative = lw.emit(COMPARE_OPS["lt"].make(idx, const(lw, torch.tensor(0, dtype=dt))))
    shifted = binary(lw, "add", idx, const(lw, torch.tensor(size, dtype=dt)))
    return lw.emit(WhereOp.make(negative, shifted, idx))


def arange_along(lw: Lowering, n: int, dim: int, rank: int, scale: int = 1) -> SSAValue:
    """`arange(n) * scale` shaped to broadcast along `dim` of a rank-`rank` tensor."""
    values = torch.arange(n, dtype=torch.int64) * scale
    return const(lw, values.reshape([1] * dim + [n] + [1] * (rank - dim - 1)))


# ---- booleans, comparisons, devices, fills ---------------------------------------------------
def _bool_binary(name: str):
    def convert(lw: Lowering, a, b):
        va = lw.value(a) if isinstance(a, torch.fx.Node) else None
        vb = lw.value(b, like=va)
        va = va if va is not None else lw.value(a, like=vb)
        if dtypes.dtype_of(va.type) != torch.bool or dtypes.dtype_of(vb.type) != torch.bool:
            raise lw.unsupported(f"bitwise {name.removeprefix('logical_')} on integers (only booleans are lowered)")
        return binary(lw, name, va, vb)

    return convert


converts(aten.__and__.Tensor, aten.bitwise_and.Tensor, aten.__and__.Scalar,
         aten.bitwise_and.Scalar)(_bool_binary("logical_and"))
converts(aten.__or__.Tensor, aten.bitwise_or.Tensor, aten.__or__.Scalar,
         aten.bitwise_or.Scalar)(_bool_binary("logical_or"))


@converts(aten.logical_not.default, aten.bitwise_not.default)
def _not(lw: Lowering, x):
    vx = lw.value(x)
    if dtypes.dtype_of(vx.type) != torch.bool and lw.node.target is aten.bitwise_not.default:
        raise lw.unsupported("bitwise_not on integers (only booleans are lowered)")
    return lw.emit(UNARY_OPS["logical_not"].make(vx))


for _alias, _name in {"greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le",
                      "not_equal": "ne"}.items():
    converts(getattr(aten, _alias).Tensor, getattr(aten, _alias).Scalar)(_compare(_name))


@converts(aten.to.device, aten.to.other, aten.to.prim_Device)
def _to_device(lw: Lowering, x, *args, **kwargs):
    """Kiln runs where the tensor already is: a same-device `to` is a cast or nothing."""
    vx = lw.value(x)
    source, target = lw.meta(x).device, lw.meta().device
    if source != target:
        raise lw.unsupported(f"device transfer {source} -> {target}")
    return cast(lw, vx, lw.meta().dtype)


@converts(aten.zeros_like.default, aten.ones_like.default, aten.full_like.default, aten.empty_like.default,
          aten.new_zeros.default, aten.new_ones.default, aten.new_full.default, aten.new_empty.default,
          aten.zero.default, aten.fill.Scalar)
def _fill_like(lw: Lowering, x, *args, **kwargs):
    """A fresh tensor of one value shaped from the node; `empty` is given zeros."""
    name = lw.node.target._schema.name.split("::")[-1]
    if name in ("full_like", "new_full", "fill"):
        position = 1 if name == "new_full" else 0  # full_like(x, value), fill(x, value), new_full(x, size, value)
        value = args[position] if len(args) > position else kwargs.get("fill_value")
    else:
        value = 1 if "ones" in name else 0
    if isinstance(value, torch.fx.Node):
        raise lw.unsupported("fill value is a tensor")
    val = lw.meta()
    return full(lw, value, lw.out_shape(), val.dtype)


# ---- gathers ---------------------------------------------------------------------------------
def _gather_rows(lw: Lowering, table: SSAValue, linear: SSAValue) -> SSAValue:
    """`table.reshape(-1, 1)[linear]`, shaped `linear.shape + (1,)`."""
    size = shape(table)
    return lw.emit(EmbeddingOp.make(reshape(lw, table, (numel(size), 1)), linear))


@converts(aten.index.Tensor)
def _index(lw: Lowering, x, indices):
    """Advanced indexing with integer tensors: one row gather over the indexed dims, flattened."""
    vx = lw.value(x)
    size = shape(vx)
    positions = [i for i, ix in enumerate(indices) if ix is not None]
    if not positions:
        return vx
    values = [lw.value(indices[i]) for i in positions]
    if any(not dtypes.is_int(v.type) or dtypes.dtype_of(v.type) == torch.bool for v in values):
        raise lw.unsupported("boolean mask indexing (its result shape depends on the data)")
    rest = [d for d in range(len(size)) if d not in positions]
    table = permute(lw, vx, tuple(positions + rest))
    rest_size = tuple(size[d] for d in rest)
    table = reshape(lw, table, (numel(tuple(size[p] for p in positions)), numel(rest_size)))
    linear = None
    for p, v in zip(positions, values):
        v = cast(lw, wrap_negative(lw, v, size[p]), torch.int64)
        stride = numel(tuple(size[q] for q in positions if q > p))
        term = v if stride == 1 else binary(lw, "mul", v, const(lw, torch.tensor(stride)))
        linear = term if linear is None else binary(lw, "add", linear, term)
    gathered = lw.emit(EmbeddingOp.make(table, linear))  # index shape + (prod(rest),)
    batch = shape(linear)
    out = reshape(lw, gathered, batch + rest_size)
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    if adjacent and positions[0] > 0:  # torch keeps the indexed block where it was
        b, lead = len(batch), positions[0]
        dims = tuple(range(b, b + lead)) + tuple(range(b)) + tuple(range(b + lead, b + len(rest)))
        out = permute(lw, out, dims)
    return out


@converts(aten.gather.default)
def _gather(lw: Lowering, x, dim, index, sparse_grad=False):
    vx, vi = lw.value(x), lw.value(index)
    size, isize = shape(vx), shape(vi)
    rank = len(size)
    if rank == 0:
        raise lw.unsupported("gather on a scalar")
    dim %= rank
    strides = [numel(size[d + 1:]) for d in range(rank)]
    linear = cast(lw, wrap_negative(lw, vi, size[dim]), torch.int64)
    if strides[dim] != 1:
        linear = binary(lw, "mul", linear, const(lw, torch.tensor(strides[dim])))
    for d in range(rank):
        if d != dim and isize[d] > 1:
            linear = binary(lw, "add", linear, arange_along(lw, isize[d], d, rank, strides[d]))
    return reshape(lw, _gather_rows(lw, vx, linear), isize)


@converts(aten.stack.default)
def _stack(lw: Lowering, xs, dim=0):
    values = [lw.value(x) for x in xs]
    dim %= len(shape(values[0])) + 1
    parts = [reshape(lw, v, shape(v)[:dim] + (1,) + shape(v)[dim:]) for v in values]
    return parts[0] if len(parts) == 1 else lw.emit(ConcatOp.make(*parts, dim=dim))


# ---- scans and arg-reductions ----------------------------------------------------------------
@converts(aten.cumsum.default)
def _cumsum(lw: Lowering, x, dim, *, dtype=None):
    """Integer cumsum (position ids, routing counts) as a sum masked by a lower triangle.

    Exact for integers. Floating-point cumsum stays in eager: this form costs n^2 work
    along the scanned dim, which only pays for the short integer scans real models do.
    """
    out_dtype = lw.meta().dtype
    if out_dtype.is_floating_point or out_dtype.is_complex:
        raise lw.unsupported("no kiln lowering for a floating-point cumsum (only integer scans are lowered)")
    vx = cast(lw, lw.value(x), out_dtype)
    size = shape(vx)
    if not size:
        return vx
    dim %= len(size)
    n = size[dim]
    if n > MAX_CUMSUM:
        raise lw.unsupported(f"cumsum over {n} > {MAX_CUMSUM} elements")
    last = len(size) - 1
    order = tuple(d for d in range(len(size)) if d != dim) + (dim,)
    moved = permute(lw, vx, order)
    row = reshape(lw, moved, shape(moved)[:-1] + (1, n))  # [..., 1, k]
    lower = const(lw, torch.ones(n, n, dtype=torch.bool).tril())  # [i, k]: k <= i
    zero = const(lw, torch.tensor(0, dtype=out_dtype))
    masked = lw.emit(WhereOp.make(lower, row, zero))  # [..., i, k]
    summed = lw.emit(ReduceOp.make(masked, kind="sum", dims=(len(shape(masked)) - 1,), keepdim=False))
    back = tuple(order.index(d) for d in range(len(size)))
    return permute(lw, summed, back) if dim != last else summed


@converts(aten.floor_divide.default, aten.floor_divide.Scalar)
def _floor_divide(lw: Lowering, a, b):
    """Integer `a // b` (MoE routing: `sorted_index // top_k`): truncated float64 quotient,
    minus one where the signs differ and it is inexact. Exact for |a| < 2**53."""
    out = lw.meta().dtype
    if out.is_floating_point or out == torch.bool:
        raise lw.unsupported(f"floor_divide on {out} (only integers are lowered)")
    va = lw.value(a) if isinstance(a, torch.fx.Node) else None
    vb = lw.value(b, like=va)
    va = va if va is not None else lw.value(a, like=vb)
    va, vb = cast(lw, va, out), cast(lw, vb, out)
    fa, fb = cast(lw, va, torch.float64), cast(lw, vb, torch.float64)
    quotient = cast(lw, binary(lw, "div", fa, fb), out)
    zero = const(lw, torch.tensor(0, dtype=out))
    inexact = lw.emit(COMPARE_OPS["ne"].make(binary(lw, "mul", quotient, vb), va))
    # signs differ: a * b < 0 in float64 (no overflow; `ne` on booleans miscompiles in TVM)
    signs = lw.emit(COMPARE_OPS["lt"].make(binary(lw, "mul", fa, fb), const(lw, torch.tensor(0.0, dtype=torch.float64))))
    fix = lw.emit(WhereOp.make(binary(lw, "logical_and", inexact, signs), const(lw, torch.tensor(1, dtype=out)), zero))
    return binary(lw, "sub", quotient, fix)


def _arg_reduce(kind: str):
    def convert(lw: Lowering, x, dim=None, keepdim=False):
        """First index of the max (min): `min(where(x == max(x), arange, n))` along dim."""
        vx = lw.value(x)
        if dtypes.dtype_of(vx.type) == torch.bool:  # TVM miscompiles == on booleans (fcmp on i1)
            raise lw.unsupported(f"arg{kind} of a boolean tensor")
        if dim is None:
            vx, dim = reshape(lw, vx, (numel(shape(vx)),)), 0
        size = shape(vx)
        if not size:
            return full(lw, 0, (), torch.int64)
        dim %= len(size)
        extreme = lw.emit(ReduceOp.make(vx, kind=kind, dims=(dim,), keepdim=True))
        hit = lw.emit(COMPARE_OPS["eq"].make(vx, extreme))
        candidates = lw.emit(WhereOp.make(hit, arange_along(lw, size[dim], dim, len(size)),
                                          const(lw, torch.tensor(size[dim]))))
        first = lw.emit(ReduceOp.make(candidates, kind="min", dims=(dim,), keepdim=bool(keepdim)))
        return reshape(lw, first, lw.out_shape())

    return convert


converts(aten.argmax.default)(_arg_reduce("max"))
converts(aten.argmin.default)(_arg_reduce("min"))


from compiler.capture import table_rnn, table_spatial  # noqa: E402,F401  (register more; they import this module)
