"""Contractions: matmul (torch.matmul semantics, batched), linear, conv2d.

These are the ops a backend hands to a library (BLAS, cuBLAS) or tiles itself; their
FLOP counts drive every cost model.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, TensorType
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from ir import dtypes
from ir.core import Contraction, KilnOp, check, same_as
from ir.ops.elementwise import broadcast_shapes


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


@irdl_op_definition
class MatmulOp(KilnOp):
    """`torch.matmul` on rank >= 2 operands: batch dims broadcast, contracts lhs[-1] with rhs[-2]."""

    name = "kiln.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Contraction())

    @classmethod
    def infer_types(cls, operand_types, options):
        a, b = (dtypes.shape_of(t) for t in operand_types)
        check(len(a) >= 2 and len(b) >= 2, f"matmul needs rank >= 2 operands, got {a} and {b}")
        check(a[-1] == b[-2], f"matmul: contracting dims differ: {a} @ {b}")
        batch = broadcast_shapes(a[:-2], b[:-2])
        return [same_as(operand_types[0], (*batch, a[-2], b[-1]))]

    def flops(self) -> int:
        k = dtypes.shape_of(self.lhs.type)[-1]
        return 2 * k * dtypes.numel(self.result.type)

    def reference(self, a, b):
        return torch.matmul(a, b)


@irdl_op_definition
class LinearOp(KilnOp):
    """`x @ weight.T + bias` with weight of shape [out, in] (nn.Linear's layout)."""

    name = "kiln.linear"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Contraction())

    @classmethod
    def infer_types(cls, operand_types, options):
        x, w = dtypes.shape_of(operand_types[0]), dtypes.shape_of(operand_types[1])
        check(len(w) == 2, f"linear: weight must be 2-D [out, in], got {w}")
        check(len(x) >= 1 and x[-1] == w[1], f"linear: input {x} does not match weight {w}")
        if len(operand_types) == 3:
            b = dtypes.shape_of(operand_types[2])
            check(b == (w[0],), f"linear: bias {b} does not match weight {w}")
        return [same_as(operand_types[0], (*x[:-1], w[0]))]

    def flops(self) -> int:
        k = dtypes.shape_of(self.weight.type)[1]
        return 2 * k * dtypes.numel(self.result.type)

    def reference(self, x, w, b=None):
        return torch.nn.functional.linear(x, w, b)


@irdl_op_definition
class Conv2dOp(KilnOp):
    """2-D convolution, NCHW input, OIHW weight (torch's layout)."""

    name = "kiln.conv2d"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    stride = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    dilation = prop_def(DenseArrayBase)
    groups = prop_def(IntegerAttr)
    traits = traits_def(Pure(), Contraction())

    @classmethod
    def infer_types(cls, operand_types, options):
        x, w = dtypes.shape_of(operand_types[0]), dtypes.shape_of(operand_types[1])
        check(len(x) == 4 and len(w) == 4, f"conv2d: expected NCHW input and OIHW weight, got {x}, {w}")
        (sh, sw), (ph, pw), (dh, dw) = options["stride"], options["padding"], options["dilation"]
        groups = int(options["groups"])
        check(x[1] == w[1] * groups, f"conv2d: input channels {x[1]} != {w[1]} x groups {groups}")
        oh = (x[2] + 2 * ph - dh * (w[2] - 1) - 1) // sh + 1
        ow = (x[3] + 2 * pw - dw * (w[3] - 1) - 1) // sw + 1
        check(oh > 0 and ow > 0, f"conv2d: empty output for input {x} and kernel {w}")
        return [same_as(operand_types[0], (x[0], w[0], oh, ow))]

    def flops(self) -> int:
        w = dtypes.shape_of(self.weight.type)
        return 2 * _prod(w[1:]) * dtypes.numel(self.result.type)

    def reference(self, x, w, b=None):
        return torch.nn.functional.conv2d(
            x, w, b, self.opt("stride"), self.opt("padding"), self.opt("dilation"), self.opt("groups")
        )


CONTRACTION_OPS = [MatmulOp, LinearOp, Conv2dOp]
