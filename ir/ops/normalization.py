"""Row-wise normalizations: softmax, log_softmax, layer_norm, rms_norm, batch_norm (inference).

Each is a reduction over a row followed by an elementwise map; fusion treats them as
one kernel with a prologue and an epilogue.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from xdsl.dialects.builtin import DenseArrayBase, FloatAttr, IntegerAttr, TensorType, i32
from xdsl.irdl import (
    AttrSizedOperandSegments,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from ir import dtypes
from ir.core import KilnOp, Reduction, check, normalize_dim


class _RowOp(KilnOp):
    input = operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    traits = traits_def(Pure(), Reduction())
    FLOPS_PER_ELEMENT: ClassVar[int] = 5

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        normalize_dim(int(options["dim"]), len(dtypes.shape_of(t)))
        return [t]


@irdl_op_definition
class SoftmaxOp(_RowOp):
    name = "kiln.softmax"

    def reference(self, x):
        return torch.softmax(x, self.opt("dim"))


@irdl_op_definition
class LogSoftmaxOp(_RowOp):
    name = "kiln.log_softmax"

    def reference(self, x):
        return torch.log_softmax(x, self.opt("dim"))


class _NormOp(KilnOp):
    """Normalizes over the trailing `ndims` dims; optional affine weight (and bias).

    Operands are declared in each subclass: IRDL orders inherited fields after new ones.
    """

    eps = prop_def(FloatAttr)
    ndims = prop_def(IntegerAttr)
    traits = traits_def(Pure(), Reduction())
    FLOPS_PER_ELEMENT: ClassVar[int] = 6

    @classmethod
    def _check(cls, operand_types, options):
        x = dtypes.shape_of(operand_types[0])
        n = int(options["ndims"])
        check(1 <= n <= len(x), f"{cls.name}: ndims={n} invalid for input {x}")
        for t in operand_types[1:]:
            check(dtypes.shape_of(t) == x[-n:], f"{cls.name}: affine {dtypes.shape_of(t)} != {x[-n:]}")
        return [operand_types[0]]

    infer_types = _check


@irdl_op_definition
class LayerNormOp(_NormOp):
    name = "kiln.layer_norm"
    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    @classmethod
    def make(cls, x, weight=None, bias=None, **options):
        op = super().make(x, weight, bias, **options)
        # Record which optional operands exist so the op prints and parses unambiguously.
        op.properties["operandSegmentSizes"] = DenseArrayBase.from_list(
            i32, [1, int(weight is not None), int(bias is not None)]
        )
        return op

    def reference(self, x, *affine):
        present = iter(affine)
        weight = next(present) if self.weight is not None else None
        bias = next(present) if self.bias is not None else None
        n = self.opt("ndims")
        return torch.nn.functional.layer_norm(x, x.shape[-n:], weight, bias, self.opt("eps"))


@irdl_op_definition
class RmsNormOp(_NormOp):
    name = "kiln.rms_norm"
    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    result = result_def(TensorType)

    def reference(self, x, weight=None):
        n = self.opt("ndims")
        return torch.nn.functional.rms_norm(x, x.shape[-n:], weight, self.opt("eps"))


@irdl_op_definition
class BatchNormOp(KilnOp):
    """Inference batch norm over dim 1 with running statistics: (x - mean) / sqrt(var + eps) * w + b."""

    name = "kiln.batch_norm"
    input = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = operand_def(TensorType)
    result = result_def(TensorType)
    eps = prop_def(FloatAttr)
    traits = traits_def(Pure())
    FLOPS_PER_ELEMENT: ClassVar[int] = 4

    @classmethod
    def infer_types(cls, operand_types, options):
        x = dtypes.shape_of(operand_types[0])
        check(len(x) >= 2, f"batch_norm: input must have a channel dim, got {x}")
        for t in operand_types[1:]:
            check(dtypes.shape_of(t) == (x[1],), f"batch_norm: statistics {dtypes.shape_of(t)} != ({x[1]},)")
        return [operand_types[0]]

    def reference(self, x, mean, var, w, b):
        return torch.nn.functional.batch_norm(x, mean, var, w, b, False, 0.0, self.opt("eps"))


NORMALIZATION_OPS = [SoftmaxOp, LogSoftmaxOp, LayerNormOp, RmsNormOp, BatchNormOp]
