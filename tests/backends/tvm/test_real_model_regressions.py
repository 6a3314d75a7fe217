"""TVM lowering bugs that real models hit and the zoo never did (each crashed a compile)."""

from __future__ import annotations

import torch
from torch import nn

from compiler import compile_model


def _check(model: nn.Module, *inputs: torch.Tensor) -> None:
    cm = compile_model(model.eval(), inputs, target="tvm", use_cache=False)
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), model(*inputs), atol=1e-5, rtol=1e-5)


class IntPositions(nn.Module):
    """RoBERTa's position ids: cumsum of a mask times the mask, plus a Python int (int64 + 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids.ne(1).int()
        return self.emb((mask * 3).long() + 1) + ids.unsqueeze(-1).float()


class AffineFreeNormAndMaskedFill(nn.Module):
    """DeBERTa-v2: a layer_norm without weight and `where(mask, -inf-ish scalar, x)` in one group."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = nn.functional.layer_norm(x, (x.shape[-1],))
        scores = h @ h.transpose(-1, -2)
        return torch.where(mask, torch.finfo(torch.float32).min, scores).softmax(-1)


class StridedInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


def test_int64_plus_python_int():
    _check(IntPositions(), torch.randint(0, 5, (2, 6)))


def test_affine_free_layer_norm_and_scalar_where_in_a_fused_group():
    mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    mask[:, :, -1] = True
    _check(AffineFreeNormAndMaskedFill(), torch.randn(2, 5, 8), mask)


def test_strided_view_input():
    base = torch.randn(4, 6)
    cm = compile_model(StridedInput(), (base.t(),), target="tvm", use_cache=False)
    torch.testing.assert_close(cm(base.t()), base.t() * 2 + 1)
