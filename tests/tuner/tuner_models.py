"""Small models for the tuner tests: a few TIR kernels, built in a second or two."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TwoKernels(nn.Module):
    """linear (library) -> gelu + residual add (one TIR kernel) -> layer_norm (another)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.fc(x)) + x)


def two_kernels() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoKernels().eval(), (torch.randn(16, 64),)
