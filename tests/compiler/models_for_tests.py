"""Small models for the compiler tests: ops Kiln cannot compile, state updates, in-place ops.

The zoo (examples/zoo.py) holds models Kiln compiles whole; these are the awkward cases
around it. Each factory returns `(model, example_inputs)` like a zoo factory, seeded and in
eval mode, so `kiln compile tests/compiler/models_for_tests.py:cumsum_between_linears` works
too. The basename is unique because the test folders are not packages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]

# An op with no entry in compiler/capture/table.py; its aten name as the report spells it.
UNSUPPORTED_OP = "aten.cumsum"


def _seeded(model_cls: type[nn.Module], *shapes: tuple[int, ...], **kwargs: object) -> Example:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_cls(**kwargs).eval()
        inputs = tuple(torch.randn(*shape) for shape in shapes)
    return model, inputs


class CumsumBetweenLinears(nn.Module):
    """linear -> gelu -> [cumsum -> linear -> relu] * n: n eager nodes, n + 1 partitions."""

    def __init__(self, n_cumsum: int = 1, dim: int = 16) -> None:
        super().__init__()
        self.first = nn.Linear(dim, dim)
        self.after = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_cumsum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.first(x))
        for layer in self.after:
            x = F.relu(layer(torch.cumsum(x, dim=-1)))
        return x


def cumsum_between_linears(n_cumsum: int = 1) -> Example:
    return _seeded(CumsumBetweenLinears, (4, 16), n_cumsum=n_cumsum)


class GridSampleBetweenConvs(nn.Module):
    """conv -> grid_sample (aten.grid_sampler, unsupported) -> conv, with two inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.before = nn.Conv2d(3, 4, 3, padding=1)
        self.after = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        sampled = F.grid_sample(self.before(x), grid, align_corners=False)
        return self.after(sampled)


def grid_sample_between_convs() -> Example:
    model, (x, grid) = _seeded(GridSampleBetweenConvs, (1, 3, 8, 8), (1, 6, 6, 2))
    return model, (x, grid.tanh())  # sampling coordinates in [-1, 1]


class CountsCalls(nn.Module):
    """Increments a buffer in forward: a state update, which Kiln refuses to capture."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return self.proj(x) * self.calls


class WritesKVCache(nn.Module):
    """Writes its input into a slice of a cache buffer (a write through a view)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cache", torch.zeros(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache[: x.shape[0]].copy_(x)
        return self.cache.sum(0)


class InPlaceOnActivations(nn.Module):
    """In-place ops on intermediates only (inplace ReLU, `mul_` on a derived weight): allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = self.proj.weight * 2
        scaled.mul_(0.5)
        return self.act(self.proj(x)) @ scaled


class SortThenLinear(nn.Module):
    """An unsupported op with two results (aten.sort) feeding a compiled partition."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = torch.sort(self.first(x), dim=-1)
        return self.second(values) + indices.float()


class UnsupportedAtEdges(nn.Module):
    """Eager nodes fed by the user input and producing outputs; an input returned as is."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.proj(torch.cumsum(x, dim=0))
        return {"input": x, "hidden": hidden, "again": hidden, "last": torch.cumsum(hidden, dim=-1)}


class ParallelBranch(nn.Module):
    """linear(x) + cumsum(x): the eager node sits beside a partition, not between two."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + torch.cumsum(x, dim=-1)


def example(model_cls: type[nn.Module], *shapes: tuple[int, ...]) -> Example:
    """Any of the classes above, seeded, with random inputs of `shapes`."""
    return _seeded(model_cls, *shapes)
