"""Conversion between Python values and the xDSL attributes that hold op options.

Ops store their options (dims, eps, kernel sizes) and the passes' decisions as
properties. Capture and passes think in Python values; this file is the single
translation so an op's `opt("eps")` reads back exactly what `make(eps=1e-5)` wrote.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute

PyValue = bool | int | float | str | tuple[int, ...] | tuple[str, ...]


def to_attr(value: PyValue | Sequence[int]) -> Attribute:
    """Python value to attribute: bool->i1, int->i64, float->f64, str, int tuple->array<i64>."""
    if isinstance(value, bool):
        return IntegerAttr(int(value), i1)
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, float):
        return FloatAttr(value, f64)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, (tuple, list)):
        if all(isinstance(v, str) for v in value) and value:
            return ArrayAttr([StringAttr(v) for v in value])
        return DenseArrayBase.from_list(i64, [int(v) for v in value])
    raise TypeError(f"cannot store {value!r} ({type(value).__name__}) as an op attribute")


def from_attr(attr: Attribute) -> PyValue:
    """Attribute back to the Python value `to_attr` took."""
    if isinstance(attr, IntegerAttr):
        width = attr.type.width.data if isinstance(attr.type, IntegerType) else 64
        return bool(attr.value.data) if width == 1 else int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return tuple(int(v) for v in attr.get_values())
    if isinstance(attr, ArrayAttr):
        return tuple(from_attr(a) for a in attr.data)  # type: ignore[misc]
    raise TypeError(f"no Python value for attribute {attr}")
