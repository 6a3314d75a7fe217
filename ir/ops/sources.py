"""Where tensors come from besides function arguments: named parameters and literal constants.

Parameters are referenced by name and their values live beside the module (in a
`Program`), so printed IR stays readable and a 100 MB weight never goes through text.
Constants are small literals (scalars, masks) printed inline.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, StringAttr, TensorType
from xdsl.irdl import irdl_op_definition, prop_def, result_def, traits_def
from xdsl.traits import ConstantLike, Pure

from ir import dtypes
from ir.core import KilnOp


class _SourceOp(KilnOp):
    """A value that exists before the function runs: nothing to verify, compute or move."""

    def verify_(self) -> None:
        pass

    def flops(self) -> int:
        return 0

    def bytes_moved(self) -> int:
        return 0


@irdl_op_definition
class ParamOp(_SourceOp):
    """A named weight or buffer of the model; its value is `program.params[name]`."""

    name = "kiln.param"
    result = result_def(TensorType)
    param_name = prop_def(StringAttr, prop_name="name")
    traits = traits_def(Pure())

    @classmethod
    def infer_types(cls, operand_types, options):
        raise ValueError("kiln.param takes its type from the parameter; use ParamOp.of")

    @classmethod
    def of(cls, name: str, tensor_type: TensorType) -> ParamOp:
        return cls.create(result_types=[tensor_type], properties={"name": StringAttr(name)})


@irdl_op_definition
class ConstantOp(_SourceOp):
    """A literal tensor (dense attribute) small enough to print inline."""

    name = "kiln.constant"
    result = result_def(TensorType)
    value = prop_def(DenseIntOrFPElementsAttr)
    traits = traits_def(Pure(), ConstantLike())

    @classmethod
    def of(cls, tensor: torch.Tensor) -> ConstantOp:
        t = dtypes.tensor_type(tuple(tensor.shape), tensor.dtype)
        flat = tensor.detach().reshape(-1).tolist()
        if tensor.dtype == torch.bool:
            flat = [int(v) for v in flat]
        attr = DenseIntOrFPElementsAttr.from_list(t, flat)
        return cls.create(result_types=[t], properties={"value": attr})

    def to_tensor(self) -> torch.Tensor:
        t = self.result.type
        values = list(self.value.get_values())  # type: ignore[attr-defined]
        return torch.tensor(values, dtype=dtypes.dtype_of(t)).reshape(dtypes.shape_of(t))

    def reference(self):
        return self.to_tensor()


SOURCE_OPS = [ParamOp, ConstantOp]
