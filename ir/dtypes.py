"""Element types: the one mapping between torch dtypes and xDSL element types.

Kept in one place so that capture, the interpreter and every backend agree on what
`tensor<4xi1>` or `tensor<2xbf16>` means.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    TensorType,
    bf16,
    f16,
    f32,
    f64,
    i1,
    i8,
    i32,
    i64,
)
from xdsl.ir import Attribute

_TORCH_TO_XDSL: dict[torch.dtype, Attribute] = {
    torch.float32: f32,
    torch.float16: f16,
    torch.bfloat16: bf16,
    torch.float64: f64,
    torch.int64: i64,
    torch.int32: i32,
    torch.int8: i8,
    torch.bool: i1,
}


def to_element_type(dtype: torch.dtype) -> Attribute:
    """The xDSL element type for a torch dtype; unsupported dtypes name themselves."""
    if dtype not in _TORCH_TO_XDSL:
        raise TypeError(f"kiln IR has no element type for torch dtype {dtype}")
    return _TORCH_TO_XDSL[dtype]


def to_torch_dtype(element_type: Attribute) -> torch.dtype:
    """The torch dtype of an xDSL element type (i1 is bool)."""
    for dtype, attr in _TORCH_TO_XDSL.items():
        if attr == element_type:
            return dtype
    raise TypeError(f"no torch dtype for element type {element_type}")


def tensor_type(shape: tuple[int, ...] | list[int], dtype: torch.dtype) -> TensorType:
    """`tensor<shape x dtype>` from a torch shape and dtype."""
    return TensorType(to_element_type(dtype), list(shape))


def shape_of(t: Attribute) -> tuple[int, ...]:
    """Static shape of a tensor type."""
    assert isinstance(t, TensorType), f"expected a tensor type, got {t}"
    return tuple(int(d) for d in t.get_shape())


def dtype_of(t: Attribute) -> torch.dtype:
    assert isinstance(t, TensorType), f"expected a tensor type, got {t}"
    return to_torch_dtype(t.element_type)


def itemsize(t: Attribute) -> int:
    """Bytes per element (bool counts as one byte, as torch stores it)."""
    return torch.empty((), dtype=dtype_of(t)).element_size()


def numel(t: Attribute) -> int:
    n = 1
    for d in shape_of(t):
        n *= d
    return n


def nbytes(t: Attribute) -> int:
    return numel(t) * itemsize(t)


def is_float(t: Attribute) -> bool:
    return isinstance(
        t.element_type if isinstance(t, TensorType) else t,
        (Float16Type, Float32Type, Float64Type, BFloat16Type),
    )


def is_int(t: Attribute) -> bool:
    return isinstance(t.element_type if isinstance(t, TensorType) else t, IntegerType)
