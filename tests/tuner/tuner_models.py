"""Small models for the tuner tests: a few TIR kernels, built in a second or two."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TwoKernels(nn.Module):
    """linear (library: its weight is an input, so no packed kernel) -> gelu + residual add
    -> layer_norm, the TIR kernels. A linear on a parameter would be a packed dense kernel,
    a tuning task of its own (`backends/tvm/dense_knobs.py`; `test_dense_knobs.py`)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(F.linear(x, w, self.bias)) + x)


def two_kernels() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoKernels().eval(), (torch.randn(16, 64), torch.randn(64, 64) * 0.125)
