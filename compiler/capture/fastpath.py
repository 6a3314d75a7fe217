"""Decompositions of PyTorch's fused inference fast paths into ops Kiln compiles.

In eval mode under `no_grad`, `nn.TransformerEncoderLayer` and `nn.MultiheadAttention`
take "fast paths": one opaque op each (`torch._transformer_encoder_layer_fwd`,
`torch._native_multi_head_attention`) that Dynamo records as is. Kiln has no lowering
for them, so the whole layer would run in eager while benchmarks credited Kiln with its
speed. Inductor decomposes them; so does Kiln: before the Dynamo graph is re-traced with
torch.export, each such call is replaced by the Python function below, which computes
the same thing from linear, scaled_dot_product_attention, layer_norm and activations,
and the re-trace turns it into those aten ops.

Conventions are the fast paths' own: batch-first tensors, packed in-projection weights
(q, k, v stacked on dim 0), and a `mask_type` of 0 (attention mask L x S), 1 (key
padding mask B x S) or 2 (any mask broadcastable to B x H x L x S); a boolean mask is
True where attention is NOT allowed.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F


def _additive_mask(mask: torch.Tensor | None, mask_type: int | None, batch: int, target: int, source: int):
    """The fast path's mask as an additive float mask broadcastable to (B, H, L, S)."""
    if mask is None:
        return None
    if mask_type == 1 or (mask_type is None and mask.dim() == 2 and mask.shape == (batch, source)):
        mask = mask.reshape(batch, 1, 1, source)
    elif mask.dim() == 2:
        mask = mask.reshape(1, 1, target, source)
    elif mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=torch.float32).masked_fill(mask, float("-inf"))
    return mask


def _attention(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, mask,
               mask_type, need_weights=False, average_attn_weights=True):
    batch, target, _ = query.shape
    source = key.shape[1]
    head_dim = embed_dim // num_heads
    wq, wk, wv = qkv_weight.chunk(3, dim=0)
    bq, bk, bv = qkv_bias.chunk(3, dim=0)
    q = F.linear(query, wq, bq).reshape(batch, target, num_heads, head_dim).transpose(1, 2)
    k = F.linear(key, wk, bk).reshape(batch, source, num_heads, head_dim).transpose(1, 2)
    v = F.linear(value, wv, bv).reshape(batch, source, num_heads, head_dim).transpose(1, 2)
    additive = _additive_mask(mask, mask_type, batch, target, source)
    weights = None
    if need_weights:
        scores = q @ k.transpose(-2, -1) / head_dim**0.5
        if additive is not None:
            scores = scores + additive
        weights = scores.softmax(dim=-1)
        out = weights @ v
        if average_attn_weights:
            weights = weights.mean(dim=1)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
    out = out.transpose(1, 2).reshape(batch, target, embed_dim)
    return F.linear(out, proj_weight, proj_bias), weights


def native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight,
                                proj_bias, mask=None, need_weights=True, average_attn_weights=True,
                                mask_type=None):
    """`torch._native_multi_head_attention`, from linear and attention."""
    return _attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask,
                      mask_type, need_weights, average_attn_weights)


def transformer_encoder_layer(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu,
                              norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1,
                              ffn_bias_1, ffn_weight_2, ffn_bias_2, mask=None, mask_type=None):
    """`torch._transformer_encoder_layer_fwd`: one post- or pre-norm encoder layer."""

    def attend(x):
        return _attention(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, mask,
                          mask_type)[0]

    def feed_forward(x):
        hidden = F.linear(x, ffn_weight_1, ffn_bias_1)
        hidden = F.gelu(hidden) if use_gelu else F.relu(hidden)
        return F.linear(hidden, ffn_weight_2, ffn_bias_2)

    def norm1(x):
        return F.layer_norm(x, (embed_dim,), norm_weight_1, norm_bias_1, eps)

    def norm2(x):
        return F.layer_norm(x, (embed_dim,), norm_weight_2, norm_bias_2, eps)

    if norm_first:
        x = src + attend(norm1(src))
        return x + feed_forward(norm2(x))
    x = norm1(src + attend(src))
    return norm2(x + feed_forward(x))


# What each fast-path callable becomes. Dynamo records the `torch._C` builtins; an
# exported graph would hold the aten overloads.
DECOMPOSITIONS = {
    torch._transformer_encoder_layer_fwd: transformer_encoder_layer,
    torch.ops.aten._transformer_encoder_layer_fwd.default: transformer_encoder_layer,
    torch._native_multi_head_attention: native_multi_head_attention,
    torch.ops.aten._native_multi_head_attention.default: native_multi_head_attention,
}


def decompose_fast_paths(gm: torch.fx.GraphModule) -> int:
    """Swap every fast-path call in `gm` for its decomposition; returns how many."""
    count = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in DECOMPOSITIONS:
            node.target = DECOMPOSITIONS[node.target]
            count += 1
    if count:
        gm.recompile()
    return count
