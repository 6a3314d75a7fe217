"""Models for the HLS backend tests, as `kiln compile` factories (`(model, example_inputs)`).

`encoder_layer` is the small encoder the HLS backend supports (one post-norm BERT layer,
width 32, 2 heads, no mask): the zoo's encoder has embeddings and a padding mask, which an
FPGA dataflow design takes as inputs from elsewhere. `op_mix` exercises every layer kind
the zoo models do not (sigmoid, tanh, silu, tanh-gelu, softmax, average pooling over a
window of 9, a layer norm over 24, an unfolded batch norm, constants, an activation x
activation matmul). `exp_model` has an op the backend cannot
emit. The basename is unique because the test folders are not packages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from examples.blocks import EncoderLayer

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


def _seeded(model: type[nn.Module], *shapes: tuple[int, ...]) -> Example:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = model().eval()
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn_like(mod.running_mean))
                mod.running_var.copy_(1.0 + 0.2 * torch.rand_like(mod.running_var))
        return m, tuple(torch.randn(*s) for s in shapes)


class SmallEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = EncoderLayer(32, 2, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, None)


def encoder_layer() -> Example:
    return _seeded(SmallEncoder, (2, 8, 32))


class OpMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 24)
        self.norm = nn.LayerNorm(24)
        self.q = nn.Linear(6, 6, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.bn(torch.sigmoid(self.conv(x)))  # batch norm after an activation: not folded
        h = F.avg_pool2d(h, 3, stride=2, padding=1)  # a window of 9: division by a constant
        h = F.max_pool2d(h, 3, stride=1, padding=1)  # padded max pooling
        v = torch.tanh(self.norm(self.fc(h.flatten(1))) * 0.5 - 0.25)  # a norm over 24, not a power of two
        v = F.silu(v) / 3.0 + F.gelu(v, approximate="tanh")
        t = v.reshape(-1, 4, 6)
        s = torch.softmax(t @ self.q(t).transpose(1, 2), dim=-1)  # activation x activation
        return s @ t, h.mean(dim=(2, 3))


def op_mix() -> Example:
    return _seeded(OpMix, (2, 3, 8, 8))


class ExpModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.fc(x))


def exp_model() -> Example:
    return _seeded(ExpModel, (2, 8))


class BatchSoftmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=0)


def batch_softmax() -> Example:
    return _seeded(BatchSoftmax, (4, 8))
