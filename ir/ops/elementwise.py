"""Elementwise ops: unary math, binary arithmetic with broadcasting, compare, where, cast.

Unary and binary ops are data: a table of (name, torch function, flops per element).
Adding an activation is one line in `UNARY`.
"""

from __future__ import annotations

import math
from typing import ClassVar

from collections.abc import Callable

import torch
from xdsl.dialects.builtin import TensorType, i1
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def, result_def, traits_def
from xdsl.dialects.builtin import FloatAttr, StringAttr
from xdsl.traits import Pure

from ir import dtypes
from ir.core import Elementwise, KilnOp, check, same_as


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy/torch broadcasting; a ValueError names both shapes when they clash."""
    try:
        return tuple(torch.broadcast_shapes(*[torch.Size(s) for s in shapes]))
    except RuntimeError as err:
        raise ValueError(f"shapes {list(shapes)} do not broadcast") from err


class UnaryOp(KilnOp):
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Elementwise())

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        return [t]


class BinaryOp(KilnOp):
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Elementwise())

    @classmethod
    def infer_types(cls, operand_types, options):
        a, b = operand_types
        shape = broadcast_shapes(dtypes.shape_of(a), dtypes.shape_of(b))
        dtype = result_dtype(a, b)
        if getattr(cls, "name", "") == "kiln.div" and not dtype.is_floating_point:
            dtype = torch.get_default_dtype()  # torch.div is true division
        return [TensorType(dtypes.to_element_type(dtype), list(shape))]


def result_dtype(a: TensorType, b: TensorType) -> torch.dtype:
    """torch's promotion, including its rule that 0-d tensors do not widen n-d ones."""
    meta = [torch.empty(dtypes.shape_of(t), dtype=dtypes.dtype_of(t), device="meta") for t in (a, b)]
    return torch.result_type(*meta)


class CompareOp(BinaryOp):
    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = BinaryOp.infer_types(operand_types, options)
        return [same_as(t, dtypes.shape_of(t), i1)]


def _gelu(op: KilnOp, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate=op.opt("approximate", "none"))


# name -> (reference, flops per element). Functions take (op, x) so options are readable.
UNARY: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    "relu": (lambda op, x: torch.relu(x), 1),
    "gelu": (_gelu, 8),
    "silu": (lambda op, x: torch.nn.functional.silu(x), 5),
    "sigmoid": (lambda op, x: torch.sigmoid(x), 4),
    "tanh": (lambda op, x: torch.tanh(x), 6),
    "exp": (lambda op, x: torch.exp(x), 4),
    "log": (lambda op, x: torch.log(x), 4),
    "neg": (lambda op, x: torch.neg(x), 1),
    "abs": (lambda op, x: torch.abs(x), 1),
    "sqrt": (lambda op, x: torch.sqrt(x), 4),
    "rsqrt": (lambda op, x: torch.rsqrt(x), 4),
    "reciprocal": (lambda op, x: torch.reciprocal(x), 1),
    "erf": (lambda op, x: torch.erf(x), 8),
    "sin": (lambda op, x: torch.sin(x), 6),
    "cos": (lambda op, x: torch.cos(x), 6),
    "logical_not": (lambda op, x: torch.logical_not(x), 1),
}

BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
}

COMPARE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "eq": torch.eq,
    "ne": torch.ne,
    "lt": torch.lt,
    "le": torch.le,
    "gt": torch.gt,
    "ge": torch.ge,
}


class ApproximableUnaryOp(UnaryOp):
    """A unary op with an `approximate` mode (gelu: "none" | "tanh")."""

    approximate = opt_prop_def(StringAttr)


APPROXIMABLE = {"gelu"}


def _unary_class(fn_name: str) -> type[UnaryOp]:
    fn, cost = UNARY[fn_name]
    base = ApproximableUnaryOp if fn_name in APPROXIMABLE else UnaryOp

    class Op(base):  # type: ignore[valid-type, misc]
        name = f"kiln.{fn_name}"
        FLOPS_PER_ELEMENT: ClassVar[int] = cost

        def reference(self, x):
            return fn(self, x)

    Op.__name__ = Op.__qualname__ = "".join(p.title() for p in fn_name.split("_")) + "Op"
    return irdl_op_definition(Op)


def _binary_class(fn_name: str, base: type[BinaryOp], fn: Callable) -> type[BinaryOp]:
    class Op(base):  # type: ignore[valid-type, misc]
        name = f"kiln.{fn_name}"

        def reference(self, a, b):
            return fn(a, b)

    Op.__name__ = Op.__qualname__ = "".join(p.title() for p in fn_name.split("_")) + "Op"
    return irdl_op_definition(Op)


UNARY_OPS = {n: _unary_class(n) for n in UNARY}
BINARY_OPS = {n: _binary_class(n, BinaryOp, f) for n, f in BINARY.items()}
COMPARE_OPS = {n: _binary_class(n, CompareOp, f) for n, f in COMPARE.items()}


@irdl_op_definition
class WhereOp(KilnOp):
    """`cond ? a : b` with broadcasting over all three."""

    name = "kiln.where"
    cond = operand_def(TensorType)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Elementwise())

    @classmethod
    def infer_types(cls, operand_types, options):
        c, a, b = operand_types
        check(c.element_type == i1, f"where: condition must be i1, got {c.element_type}")
        shape = broadcast_shapes(*(dtypes.shape_of(t) for t in operand_types))
        return [TensorType(dtypes.to_element_type(result_dtype(a, b)), list(shape))]

    def reference(self, c, a, b):
        return torch.where(c, a, b)


@irdl_op_definition
class CastOp(KilnOp):
    """Element type conversion; the target type is the result type."""

    name = "kiln.cast"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    dtype = prop_def(StringAttr)
    traits = traits_def(Pure(), Elementwise())

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        dtype = getattr(torch, str(options["dtype"]))
        return [same_as(t, dtypes.shape_of(t), dtypes.to_element_type(dtype))]

    def reference(self, x):
        return x.to(getattr(torch, self.opt("dtype")))


@irdl_op_definition
class ClampOp(KilnOp):
    """clamp(x, min, max); either bound may be absent."""

    name = "kiln.clamp"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    min = opt_prop_def(FloatAttr)
    max = opt_prop_def(FloatAttr)
    traits = traits_def(Pure(), Elementwise())

    @classmethod
    def make(cls, x, *, min: float | None = None, max: float | None = None):
        # Bounds are f64 properties whatever Python number the caller wrote (`min=0`).
        lo = None if min is None else float(min)
        hi = None if max is None else float(max)
        return super().make(x, min=lo, max=hi)

    @classmethod
    def infer_types(cls, operand_types, options):
        return [operand_types[0]]

    def reference(self, x):
        lo, hi = self.opt("min"), self.opt("max")
        if not x.is_floating_point():
            # Float bounds would promote an integer tensor; clamp in its own dtype instead.
            lo = None if lo is None else math.ceil(lo)
            hi = None if hi is None else math.floor(hi)
        return torch.clamp(x, lo, hi)


ELEMENTWISE_OPS = (
    list(UNARY_OPS.values()) + list(BINARY_OPS.values()) + list(COMPARE_OPS.values())
) + [WhereOp, CastOp, ClampOp]
