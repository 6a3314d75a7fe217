"""Data movement: reshape, permute, slice, concat, expand, embedding (a row gather), index_select.

No arithmetic; on a CPU most are views or copies, and fusion folds them into the
indexing of their consumer.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, TensorType
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def, var_operand_def
from xdsl.traits import Pure

from ir import dtypes
from ir.core import DataMovement, KilnOp, check, normalize_dim, same_as


class _MoveOp(KilnOp):
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), DataMovement())

    def flops(self) -> int:
        return 0


@irdl_op_definition
class ReshapeOp(_MoveOp):
    name = "kiln.reshape"
    shape = prop_def(DenseArrayBase)

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        shape = tuple(options["shape"])
        check(all(d >= 0 for d in shape), f"reshape: shape {shape} must be fully static (no -1)")
        check(
            dtypes.numel(t) == _numel(shape),
            f"reshape: {dtypes.shape_of(t)} has {dtypes.numel(t)} elements, {shape} has {_numel(shape)}",
        )
        return [same_as(t, shape)]

    def reference(self, x):
        return x.reshape(self.opt("shape"))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@irdl_op_definition
class PermuteOp(_MoveOp):
    name = "kiln.permute"
    dims = prop_def(DenseArrayBase)

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        shape, dims = dtypes.shape_of(t), tuple(options["dims"])
        check(sorted(dims) == list(range(len(shape))), f"permute: {dims} is not a permutation of rank {len(shape)}")
        return [same_as(t, tuple(shape[d] for d in dims))]

    def reference(self, x):
        return x.permute(self.opt("dims"))


@irdl_op_definition
class SliceOp(_MoveOp):
    """x[start:end:step] along `dim`; start/end already clamped to the dim by capture."""

    name = "kiln.slice"
    dim = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        shape = list(dtypes.shape_of(t))
        dim = normalize_dim(int(options["dim"]), len(shape))
        start, end, step = int(options["start"]), int(options["end"]), int(options["step"])
        check(0 <= start <= end <= shape[dim] and step >= 1, f"slice: [{start}:{end}:{step}] invalid for size {shape[dim]}")
        shape[dim] = (end - start + step - 1) // step
        return [same_as(t, shape)]

    def reference(self, x):
        dim = self.opt("dim") % x.dim()
        index = [slice(None)] * dim + [slice(self.opt("start"), self.opt("end"), self.opt("step"))]
        return x[tuple(index)]


@irdl_op_definition
class ExpandOp(_MoveOp):
    name = "kiln.expand"
    shape = prop_def(DenseArrayBase)

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        src, shape = dtypes.shape_of(t), tuple(options["shape"])
        check(len(shape) >= len(src), f"expand: cannot expand {src} to fewer dims {shape}")
        for s, d in zip(reversed(src), reversed(shape)):
            check(s in (1, d), f"expand: {src} does not expand to {shape}")
        return [same_as(t, shape)]

    def reference(self, x):
        return x.expand(self.opt("shape"))


@irdl_op_definition
class ConcatOp(KilnOp):
    name = "kiln.concat"
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    dim = prop_def(IntegerAttr)
    traits = traits_def(Pure(), DataMovement())

    @classmethod
    def infer_types(cls, operand_types, options):
        check(len(operand_types) >= 1, "concat: needs at least one input")
        shapes = [dtypes.shape_of(t) for t in operand_types]
        dim = normalize_dim(int(options["dim"]), len(shapes[0]))
        for s in shapes:
            check(len(s) == len(shapes[0]) and all(
                a == b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != dim
            ), f"concat: shapes {shapes} differ outside dim {dim}")
        out = list(shapes[0])
        out[dim] = sum(s[dim] for s in shapes)
        return [same_as(operand_types[0], out)]

    def flops(self) -> int:
        return 0

    def reference(self, *xs):
        return torch.cat(xs, self.opt("dim"))


@irdl_op_definition
class EmbeddingOp(KilnOp):
    """weight[indices]: rows of a [num, dim] table gathered by integer indices."""

    name = "kiln.embedding"
    weight = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), DataMovement())

    @classmethod
    def infer_types(cls, operand_types, options):
        w, idx = operand_types
        check(len(dtypes.shape_of(w)) == 2, f"embedding: weight must be 2-D, got {dtypes.shape_of(w)}")
        check(dtypes.is_int(idx), f"embedding: indices must be integers, got {idx.element_type}")
        return [same_as(w, (*dtypes.shape_of(idx), dtypes.shape_of(w)[1]))]

    def flops(self) -> int:
        return 0

    def bytes_moved(self) -> int:
        # Only the gathered rows are read, not the whole table.
        return 2 * dtypes.nbytes(self.result.type) + dtypes.nbytes(self.indices.type)

    def reference(self, w, idx):
        return torch.nn.functional.embedding(idx, w)


MOVEMENT_OPS = [ReshapeOp, PermuteOp, SliceOp, ExpandOp, ConcatOp, EmbeddingOp]
