"""Transformer building blocks shared by the model zoo (`examples/zoo.py`).

The blocks are written with plain torch ops on purpose, in the shapes that real models use
(hand-written RMSNorm, rotary embedding by slicing and `cat`, attention through
`F.scaled_dot_product_attention`, a dense mixture of experts), so that Kiln's capture sees
the same patterns it will meet in Hugging Face models and must recognize them itself.
Everything is export-friendly: no data-dependent shapes and no Python loops over tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm as Llama writes it; capture is expected to pattern-match it."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(
    max_seq: int, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precomputed cos/sin tables of shape (max_seq, head_dim), halves duplicated (Llama layout)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_seq, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, seq, head_dim); cos/sin: (seq, head_dim)."""
    return x * cos + rotate_half(x) * sin


class SelfAttention(nn.Module):
    """Multi-head self attention with separate q/k/v projections, as BERT and Llama have.

    `rotary` adds rotary position embedding to q and k (decoders); `causal` uses SDPA's
    `is_causal`; a boolean `mask` (batch, seq), True for real tokens, masks padded keys.
    """

    def __init__(
        self, dim: int, heads: int, *, bias: bool, causal: bool, rotary_seq: int = 0
    ) -> None:
        super().__init__()
        assert dim % heads == 0, f"dim {dim} is not divisible by heads {heads}"
        self.heads = heads
        self.head_dim = dim // heads
        self.causal = causal
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(dim, dim, bias=bias)
        self.v = nn.Linear(dim, dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.rotary = rotary_seq > 0
        if self.rotary:
            cos, sin = rotary_tables(rotary_seq, self.head_dim)
            # Buffers, not parameters: they are constants of the model, and persistent=False
            # keeps them out of the state dict, as Llama does.
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        if self.rotary:
            cos, sin = self.cos[:s], self.sin[:s]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class SwiGLU(nn.Module):
    """The gated MLP of Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MixtureOfExperts(nn.Module):
    """Top-k routed SwiGLU experts, computed densely so that shapes never depend on data.

    Every expert runs on every token (one batched matmul over stacked expert weights), and
    the router's renormalized top-k weights zero out the experts a token was not sent to.
    This costs `experts / top_k` times the FLOPs of a sparse dispatch, but it exports with
    `torch.export` and compiles with Inductor unchanged; choosing a sparse dispatch and
    placing the experts is the compiler's job, not the model's.
    """

    def __init__(self, dim: int, hidden: int, experts: int = 8, top_k: int = 2) -> None:
        super().__init__()
        self.experts = experts
        self.top_k = top_k
        self.router = nn.Linear(dim, experts, bias=False)
        scale = dim**-0.5
        self.w_gate = nn.Parameter(torch.randn(experts, dim, hidden) * scale)
        self.w_up = nn.Parameter(torch.randn(experts, dim, hidden) * scale)
        self.w_down = nn.Parameter(torch.randn(experts, hidden, dim) * hidden**-0.5)
        self.register_buffer("expert_ids", torch.arange(experts), persistent=False)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k expert indices (tokens, k) and their renormalized weights (tokens, k)."""
        probs = torch.softmax(self.router(x), dim=-1)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)
        return top_i, top_w / top_w.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        tokens = x.reshape(b * s, d)
        top_i, top_w = self.route(tokens)
        # (tokens, experts): the weight of each expert for each token, zero where not chosen.
        chosen = (top_i.unsqueeze(-1) == self.expert_ids).to(x.dtype)
        gates = (top_w.unsqueeze(-1) * chosen).sum(dim=1)
        h = F.silu(tokens @ self.w_gate) * (tokens @ self.w_up)  # (experts, tokens, hidden)
        y = h @ self.w_down  # (experts, tokens, dim)
        out = (y * gates.transpose(0, 1).unsqueeze(-1)).sum(dim=0)
        return out.reshape(b, s, d)


class DecoderBlock(nn.Module):
    """Pre-norm Llama block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp: nn.Module, max_seq: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = SelfAttention(dim, heads, bias=False, causal=True, rotary_seq=max_seq)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class EncoderLayer(nn.Module):
    """Post-norm BERT layer: norm(x + attn(x)), then norm(x + mlp(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, bias=True, causal=False)
        self.attn_norm = nn.LayerNorm(dim, eps=1e-12)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, mask))
        return self.mlp_norm(x + self.fc2(F.gelu(self.fc1(x))))
