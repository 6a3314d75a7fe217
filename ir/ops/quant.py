"""Quantize and dequantize: the two ops that make a quantized program runnable anywhere.

Their reference implementations are the emulation in `ir.quant`, so the interpreter (and
the eager backend) computes what a quantized kernel must compute, bit for bit, and any
backend's output can be compared with it exactly.

- `kiln.quantize(x) {format, axis, scale?} -> (codes, scales)`: codes are the raw element
  bit patterns, one per element of `x` (i8 for formats of <= 8 bits, else i32; the i8
  holds the byte's bits, so E4M3 0xC0 reads as -64); groups and MX blocks run along
  `axis`. `scales` is the (rows, groups) grid of the row view (`ir.quant.to_rows(x, axis)`)
  in the format's storage type (f32, f16, or i8 holding E8M0 biased exponents), (1, 1)
  for a per-tensor scale, and a (1, 1) tensor of 1.0 for scale-free formats. `scale`, when
  given, fixes a per-tensor scale (static activation quantization from calibration);
  without it the scale is computed from the data (dynamic).
- `kiln.dequantize(codes, scales?) {format, axis, shape?} -> f32`: the inverse. With
  `shape`, `codes` is a packed byte stream (1-D i8, `ir.quant.packing` layout) of a tensor
  of that shape, which is how weights are stored; without it `codes` has the result's
  shape. Scale-free formats (fixed point, bf16) take no `scales` operand.

Neither op claims the Elementwise trait: dynamic scales reduce over blocks, and packed
codes change shape, so fusion treats them as opaque until a backend says how it fuses
them (a dequantize feeding a matmul is the pattern to recognize).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f16,
    f32,
    i8,
    i32,
)
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from ir import dtypes
from ir.core import KilnOp, check, normalize_dim
from ir.quant import from_rows, get_format, packed_nbytes, rows_of, to_rows
from ir.quant.formats import QTensor

_SCALE_TYPES = {"f32": f32, "f16": f16, "e8m0": i8}


def _codes_type(bits: int):
    return i8 if bits <= 8 else i32


@irdl_op_definition
class QuantizeOp(KilnOp):
    name = "kiln.quantize"
    input = operand_def(TensorType)
    codes = result_def(TensorType)
    scales = result_def(TensorType)
    format = prop_def(StringAttr)
    axis = prop_def(IntegerAttr)
    scale = opt_prop_def(FloatAttr)
    traits = traits_def(Pure())
    FLOPS_PER_ELEMENT: ClassVar[int] = 4

    @classmethod
    def make(cls, x, *, format: str, axis: int = -1, scale: float | None = None):
        return super().make(x, format=format, axis=int(axis), scale=None if scale is None else float(scale))

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        check(dtypes.is_float(t), f"quantize: input must be floating point, got {t}")
        fmt = get_format(str(options["format"]))
        check(fmt.resolve(1.0) is fmt, f"quantize: {fmt.name} is a family; name a concrete type (e.g. fixed<16,6>)")
        shape = dtypes.shape_of(t)
        normalize_dim(int(options["axis"]), len(shape))
        if "scale" in options:
            check(fmt.group == -1 and fmt.scale in ("f32", "f16"), f"quantize: a static scale needs a per-tensor format, not {fmt.name}")
            check(float(options["scale"]) > 0, "quantize: scale must be > 0")
        rows, k = rows_of(shape, int(options["axis"]))
        sshape = fmt.scale_shape(rows, k) if fmt.scale != "none" else (1, 1)
        stype = _SCALE_TYPES.get(fmt.scale, f32)
        return [TensorType(_codes_type(fmt.bits), list(shape)), TensorType(stype, list(sshape))]

    def reference(self, x):
        fmt = get_format(self.opt("format"))
        axis = self.opt("axis")
        q = fmt.quantize(to_rows(x, axis), self.opt("scale"))
        codes = from_rows(q.codes, tuple(x.shape), axis)
        codes = codes.to(torch.uint8).view(torch.int8) if fmt.bits <= 8 else codes.to(torch.int32)
        if q.scales is None:
            return codes, torch.ones(1, 1)
        scales = q.scales.view(torch.int8) if q.scales.dtype == torch.uint8 else q.scales
        return codes, scales


@irdl_op_definition
class DequantizeOp(KilnOp):
    name = "kiln.dequantize"
    codes = operand_def(TensorType)
    scales = opt_operand_def(TensorType)
    result = result_def(TensorType)
    format = prop_def(StringAttr)
    axis = prop_def(IntegerAttr)
    shape = opt_prop_def(DenseArrayBase)
    traits = traits_def(Pure())
    FLOPS_PER_ELEMENT: ClassVar[int] = 2

    @classmethod
    def make(cls, codes, scales=None, *, format: str, axis: int = -1, shape=None):
        return super().make(codes, scales, format=format, axis=int(axis),
                            shape=None if shape is None else tuple(int(d) for d in shape))

    @classmethod
    def infer_types(cls, operand_types, options):
        fmt = get_format(str(options["format"]))
        check(fmt.resolve(1.0) is fmt, f"dequantize: {fmt.name} is a family; name a concrete type")
        codes_t = operand_types[0]
        if "shape" in options:
            shape = tuple(options["shape"])
            rows, k = rows_of(shape, int(options["axis"]))
            need = packed_nbytes(rows * k, fmt.bits)
            check(dtypes.shape_of(codes_t) == (need,) and dtypes.dtype_of(codes_t) == torch.int8,
                  f"dequantize: {fmt.name} {shape} packs into tensor<{need}xi8>, got {codes_t}")
        else:
            shape = dtypes.shape_of(codes_t)
            check(codes_t.element_type == _codes_type(fmt.bits),
                  f"dequantize: {fmt.name} codes must be {_codes_type(fmt.bits)}, got {codes_t}")
        normalize_dim(int(options["axis"]), len(shape))
        rows, k = rows_of(shape, int(options["axis"]))
        if fmt.scale == "none":
            check(len(operand_types) == 1 or dtypes.numel(operand_types[1]) == 1,
                  f"dequantize: {fmt.name} has no scales")
        else:
            check(len(operand_types) == 2, f"dequantize: {fmt.name} needs a scales operand")
            want = TensorType(_SCALE_TYPES[fmt.scale], list(fmt.scale_shape(rows, k)))
            check(operand_types[1] == want, f"dequantize: {fmt.name} scales must be {want}, got {operand_types[1]}")
        return [TensorType(f32, list(shape))]

    def reference(self, codes, scales=None):
        fmt = get_format(self.opt("format"))
        axis = self.opt("axis")
        shape = self.opt("shape")
        if fmt.scale == "none":
            scales = None
        if shape is not None:
            rows, k = rows_of(tuple(shape), axis)
            q = fmt.unpack(codes, scales, rows, k)
        else:
            shape = tuple(codes.shape)
            view = to_rows(codes.view(torch.uint8) if codes.dtype == torch.int8 else codes, axis)
            if scales is not None and scales.dtype == torch.int8:
                scales = scales.view(torch.uint8)
            q = QTensor(fmt.name, view.to(torch.int64), scales)
        return from_rows(fmt.dequantize(q), tuple(shape), axis).contiguous()


QUANT_OPS = [QuantizeOp, DequantizeOp]
