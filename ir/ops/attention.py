"""Scaled dot-product attention as one op, so backends can emit one flash-attention kernel."""

from __future__ import annotations

import math

import torch
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, TensorType
from xdsl.irdl import irdl_op_definition, operand_def, opt_operand_def, opt_prop_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from ir import dtypes
from ir.core import Contraction, KilnOp, check, same_as
from ir.ops.elementwise import broadcast_shapes


@irdl_op_definition
class AttentionOp(KilnOp):
    """softmax(q @ k^T * scale + mask) @ v over [..., L, E] operands.

    `mask` is additive (float) or boolean (True keeps), broadcast to [..., L, S]; `causal`
    masks keys after each query. `scale` defaults to 1/sqrt(E), as in torch.
    """

    name = "kiln.attention"
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    value = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    causal = prop_def(IntegerAttr)
    scale = opt_prop_def(FloatAttr)
    traits = traits_def(Pure(), Contraction())

    @classmethod
    def infer_types(cls, operand_types, options):
        q, k, v = (dtypes.shape_of(t) for t in operand_types[:3])
        check(len(q) >= 2 and len(q) == len(k) == len(v), f"attention: ranks differ: q{q} k{k} v{v}")
        check(q[-1] == k[-1], f"attention: query dim {q[-1]} != key dim {k[-1]}")
        check(k[-2] == v[-2], f"attention: key length {k[-2]} != value length {v[-2]}")
        batch = broadcast_shapes(q[:-2], k[:-2], v[:-2])
        if len(operand_types) == 4:
            m = dtypes.shape_of(operand_types[3])
            broadcast_shapes(m, (*batch, q[-2], k[-2]))
            check(not options.get("causal"), "attention: give either a mask or causal, not both")
        return [same_as(operand_types[0], (*batch, q[-2], v[-1]))]

    def flops(self) -> int:
        q, k = dtypes.shape_of(self.query.type), dtypes.shape_of(self.key.type)
        v = dtypes.shape_of(self.value.type)
        batch = math.prod(dtypes.shape_of(self.result.type)[:-2])
        return 2 * batch * q[-2] * k[-2] * (q[-1] + v[-1])

    def reference(self, q, k, v, mask=None):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=bool(self.opt("causal")), scale=self.opt("scale")
        )


ATTENTION_OPS = [AttentionOp]
