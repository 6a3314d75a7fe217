"""Mixture-of-experts routing: top-k, dispatch of tokens to per-expert buffers, combine.

Dispatch uses a fixed capacity per expert (tokens past it are dropped, as in GShard and
Switch), so every shape is static and the experts run as one batched matmul over
[experts, capacity, dim] buffers; expert placement later moves those buffers.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import IntegerAttr, TensorType, i64
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure

from ir import dtypes
from ir.core import KilnOp, Routing, check, normalize_dim, same_as


@irdl_op_definition
class TopkOp(KilnOp):
    name = "kiln.topk"
    input = operand_def(TensorType)
    values = result_def(TensorType)
    indices = result_def(TensorType)
    k = prop_def(IntegerAttr)
    dim = prop_def(IntegerAttr)
    largest = prop_def(IntegerAttr)
    traits = traits_def(Pure(), Routing())

    @classmethod
    def infer_types(cls, operand_types, options):
        (t,) = operand_types
        shape = list(dtypes.shape_of(t))
        dim = normalize_dim(int(options["dim"]), len(shape))
        check(1 <= int(options["k"]) <= shape[dim], f"topk: k={options['k']} out of range for size {shape[dim]}")
        shape[dim] = int(options["k"])
        return [same_as(t, shape), same_as(t, shape, i64)]

    def flops(self) -> int:
        return dtypes.numel(self.input.type) * max(1, int(self.opt("k")))

    def reference(self, x):
        out = torch.topk(x, self.opt("k"), self.opt("dim"), bool(self.opt("largest")), sorted=True)
        return out.values, out.indices


def dispatch_slots(indices: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Slot of each (token, choice) in its expert's buffer, or -1 when the expert is full.

    Tokens claim slots in token order, first choices before second (GShard's priority).
    """
    t, k = indices.shape
    order = indices.t().reshape(-1).long()  # choice-major: all first choices, then all second
    onehot = torch.nn.functional.one_hot(order, num_experts)
    position = (torch.cumsum(onehot, 0) - 1).gather(1, order[:, None])[:, 0]
    slots = torch.where(position < capacity, position, torch.full_like(position, -1))
    return slots.reshape(k, t).t().contiguous()


@irdl_op_definition
class MoeDispatchOp(KilnOp):
    """tokens [T, D], expert indices [T, K] -> buffers [E, C, D] and slots [T, K] (-1 = dropped)."""

    name = "kiln.moe_dispatch"
    tokens = operand_def(TensorType)
    indices = operand_def(TensorType)
    buffers = result_def(TensorType)
    slots = result_def(TensorType)
    num_experts = prop_def(IntegerAttr)
    capacity = prop_def(IntegerAttr)
    traits = traits_def(Pure(), Routing())

    @classmethod
    def infer_types(cls, operand_types, options):
        tok, idx = (dtypes.shape_of(t) for t in operand_types)
        check(len(tok) == 2 and len(idx) == 2 and tok[0] == idx[0], f"moe_dispatch: tokens {tok}, indices {idx}")
        check(dtypes.is_int(operand_types[1]), f"moe_dispatch: indices must be integers, got {operand_types[1]}")
        e, c = int(options["num_experts"]), int(options["capacity"])
        check(e >= 1 and c >= 1, "moe_dispatch: num_experts and capacity must be >= 1")
        return [same_as(operand_types[0], (e, c, tok[1])), same_as(operand_types[1], idx, i64)]

    def flops(self) -> int:
        return 0

    def reference(self, tokens, indices):
        e, c = self.opt("num_experts"), self.opt("capacity")
        slots = dispatch_slots(indices, e, c)
        buffers = tokens.new_zeros((e, c, tokens.shape[1]))
        tok_ids = torch.arange(tokens.shape[0])[:, None].expand_as(indices)
        keep = slots >= 0
        buffers[indices[keep], slots[keep]] = tokens[tok_ids[keep]]
        return buffers, slots


@irdl_op_definition
class MoeCombineOp(KilnOp):
    """Weighted sum over each token's experts: out[t] = sum_k w[t,k] * buffers[idx[t,k], slot[t,k]]."""

    name = "kiln.moe_combine"
    buffers = operand_def(TensorType)
    indices = operand_def(TensorType)
    slots = operand_def(TensorType)
    weights = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Routing())

    @classmethod
    def infer_types(cls, operand_types, options):
        buf, idx, slots, w = (dtypes.shape_of(t) for t in operand_types)
        check(len(buf) == 3 and idx == slots == w, f"moe_combine: buffers {buf}, indices {idx}, slots {slots}, weights {w}")
        check(
            dtypes.is_int(operand_types[1]) and dtypes.is_int(operand_types[2]),
            f"moe_combine: indices and slots must be integers, got {operand_types[1]}, {operand_types[2]}",
        )
        return [same_as(operand_types[0], (idx[0], buf[2]))]

    def flops(self) -> int:
        return 2 * dtypes.numel(self.weights.type) * dtypes.shape_of(self.buffers.type)[2]

    def reference(self, buffers, indices, slots, weights):
        keep = slots >= 0
        rows = buffers[indices, slots.clamp(min=0)]  # [T, K, D]
        w = torch.where(keep, weights, torch.zeros_like(weights))
        return (rows * w[..., None]).sum(1)


MOE_OPS = [TopkOp, MoeDispatchOp, MoeCombineOp]
