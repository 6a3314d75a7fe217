"""2-D pooling (max, avg) over NCHW; global average pooling is a mean `kiln.reduce`."""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import DenseArrayBase, StringAttr, TensorType
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from ir import dtypes
from ir.core import KilnOp, Reduction, check, same_as


@irdl_op_definition
class Pool2dOp(KilnOp):
    name = "kiln.pool2d"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    kind = prop_def(StringAttr)
    kernel = prop_def(DenseArrayBase)
    stride = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    traits = traits_def(Pure(), Reduction())

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        x = dtypes.shape_of(t)
        check(len(x) == 4, f"pool2d: expected NCHW input, got {x}")
        check(options["kind"] in ("max", "avg"), f"pool2d: kind must be max or avg, got {options['kind']!r}")
        (kh, kw), (sh, sw), (ph, pw) = options["kernel"], options["stride"], options["padding"]
        oh, ow = (x[2] + 2 * ph - kh) // sh + 1, (x[3] + 2 * pw - kw) // sw + 1
        check(oh > 0 and ow > 0, f"pool2d: empty output for {x}")
        return [same_as(t, (x[0], x[1], oh, ow))]

    def flops(self) -> int:
        kh, kw = self.opt("kernel")
        return dtypes.numel(self.result.type) * kh * kw

    def reference(self, x):
        args = (self.opt("kernel"), self.opt("stride"), self.opt("padding"))
        if self.opt("kind") == "max":
            return torch.nn.functional.max_pool2d(x, *args)
        return torch.nn.functional.avg_pool2d(x, *args)


POOLING_OPS = [Pool2dOp]
