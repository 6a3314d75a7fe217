"""Reductions over a set of dims: sum, mean, max, min, prod, with or without keepdim."""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, TensorType
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from ir import dtypes
from ir.core import KilnOp, Reduction, check, normalize_dim, same_as

KINDS = {
    "sum": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "mean": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "max": lambda x, d, k: torch.amax(x, d, keepdim=k),
    "min": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "prod": lambda x, d, k: _prod(x, d, k),
}


def _prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = torch.prod(x, d, keepdim=keepdim)
    return x


@irdl_op_definition
class ReduceOp(KilnOp):
    name = "kiln.reduce"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    kind = prop_def(StringAttr)
    dims = prop_def(DenseArrayBase)
    keepdim = prop_def(IntegerAttr)
    traits = traits_def(Pure(), Reduction())

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        kind = str(options["kind"])
        check(kind in KINDS, f"reduce: unknown kind {kind!r} (known: {sorted(KINDS)})")
        shape = dtypes.shape_of(t)
        dims = {normalize_dim(d, len(shape)) for d in options["dims"]}
        if options["keepdim"]:
            out = [1 if i in dims else s for i, s in enumerate(shape)]
        else:
            out = [s for i, s in enumerate(shape) if i not in dims]
        return [same_as(t, out)]

    def flops(self) -> int:
        return dtypes.numel(self.input.type)

    def reference(self, x):
        return KINDS[self.opt("kind")](x, self.opt("dims"), bool(self.opt("keepdim")))


REDUCTION_OPS = [ReduceOp]
