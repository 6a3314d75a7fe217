"""The model zoo: small, realistic models that every part of Kiln is tested and benchmarked on.

Each factory takes no required arguments and returns `(model, example_inputs)`: an
`nn.Module` in eval mode with seeded weights, and a tuple of tensors. Two calls return
identical models and inputs, so results can be compared across runs and machines. Sizes are
chosen so one eager call takes about a millisecond on two CPU cores: large enough that the
compiler's choices show in the timings, small enough that the test suite stays fast.

Every model exports with `torch.export.export(model, example_inputs)` and compiles with
`torch.compile`. Norm weights and batch-norm statistics are randomized (not left at 1 and 0)
so that a compiler that drops or misapplies them produces visibly wrong numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from examples.blocks import (
    DecoderBlock,
    EncoderLayer,
    MixtureOfExperts,
    RMSNorm,
    SwiGLU,
)

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


def _seeded(build: Callable[[], Example], seed: int) -> Example:
    """Build under a private RNG state, so the result is fixed and the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, inputs = build()
        _randomize_norms(model)
    return model.eval(), inputs


def _randomize_norms(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm | nn.BatchNorm2d | RMSNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
            if isinstance(m, nn.LayerNorm | nn.BatchNorm2d) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.copy_(1.0 + 0.2 * torch.rand_like(m.running_var))


# --- mlp ---------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, dims: tuple[int, ...] = (256, 512, 512, 256, 10)) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers[:-1]):
            # Alternate activations so capture and fusion see both.
            x = F.gelu(layer(x)) if i % 2 == 0 else F.relu(layer(x))
        return self.layers[-1](x)


def mlp(batch: int = 8, seed: int = 0) -> Example:
    return _seeded(lambda: (MLP(), (torch.randn(batch, 256),)), seed)


# --- cnn ---------------------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))))


class CNN(nn.Module):
    """A ResNet-like stem, one residual block, max and adaptive-average pooling, linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 32)
        self.pool = nn.MaxPool2d(2)
        self.down = conv_bn_relu(32, 64, stride=2)
        self.block = ResidualBlock(64)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.down(self.pool(self.stem(x))))
        return self.head(torch.flatten(self.avg(x), 1))


def cnn(batch: int = 2, seed: int = 0) -> Example:
    return _seeded(lambda: (CNN(), (torch.randn(batch, 3, 32, 32),)), seed)


# --- encoder (BERT-style) ----------------------------------------------------------------


class Encoder(nn.Module):
    """Token + position embeddings, embedding LayerNorm, post-norm layers; returns hidden states.

    `mask` is a boolean padding mask (batch, seq), True for real tokens, as Hugging Face's
    `attention_mask` is once cast to bool.
    """

    def __init__(
        self, vocab: int, dim: int, heads: int, hidden: int, layers: int, max_seq: int
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_seq, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, hidden) for _ in range(layers))
        self.register_buffer("position_ids", torch.arange(max_seq), persistent=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[: ids.shape[1]]
        x = self.norm(self.tokens(ids) + self.positions(positions))
        for layer in self.layers:
            x = layer(x, mask)
        return x


def padding_mask(lengths: list[int], seq: int) -> torch.Tensor:
    """Boolean (batch, seq) mask, True for the first `length` positions of each row."""
    return torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]


def encoder(batch: int = 2, seq: int = 64, layers: int = 2, seed: int = 0) -> Example:
    def build() -> Example:
        model = Encoder(vocab=2000, dim=256, heads=4, hidden=1024, layers=layers, max_seq=128)
        ids = torch.randint(0, 2000, (batch, seq))
        # Every row keeps at least one real token, so no query row is fully masked.
        lengths = [max(1, seq - (i * seq) // (2 * batch)) for i in range(batch)]
        return model, (ids, padding_mask(lengths, seq))

    return _seeded(build, seed)


# --- gpt (Llama-style decoder) -----------------------------------------------------------


class Decoder(nn.Module):
    """Embedding, pre-norm decoder blocks, final RMSNorm and LM head; returns logits."""

    def __init__(self, vocab: int, dim: int, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(blocks)
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def gpt_layers(
    n_layers: int,
    batch: int = 2,
    seq: int = 32,
    dim: int = 256,
    heads: int = 4,
    vocab: int = 2000,
    seed: int = 0,
) -> Example:
    """A Llama-style decoder with `n_layers` blocks (RoPE, causal SDPA, SwiGLU, RMSNorm)."""
    hidden = 64 * round(8 * dim / 3 / 64)  # Llama's 8/3 expansion, rounded to 64

    def build() -> Example:
        blocks = [DecoderBlock(dim, heads, SwiGLU(dim, hidden), 2 * seq) for _ in range(n_layers)]
        model = Decoder(vocab, dim, blocks)
        return model, (torch.randint(0, vocab, (batch, seq)),)

    return _seeded(build, seed)


def gpt(seed: int = 0) -> Example:
    return gpt_layers(4, seed=seed)


# --- moe (Mixtral-style decoder) ---------------------------------------------------------


def moe_layers(
    n_layers: int = 2,
    batch: int = 2,
    seq: int = 32,
    dim: int = 256,
    heads: int = 4,
    experts: int = 8,
    top_k: int = 2,
    expert_hidden: int = 256,
    vocab: int = 2000,
    seed: int = 0,
) -> Example:
    """A decoder whose blocks use a mixture of `experts` SwiGLU experts with top-k routing."""

    def build() -> Example:
        blocks = [
            DecoderBlock(dim, heads, MixtureOfExperts(dim, expert_hidden, experts, top_k), 2 * seq)
            for _ in range(n_layers)
        ]
        model = Decoder(vocab, dim, blocks)
        return model, (torch.randint(0, vocab, (batch, seq)),)

    return _seeded(build, seed)


def moe(seed: int = 0) -> Example:
    return moe_layers(seed=seed)


# --- registry ----------------------------------------------------------------------------

ZOO: dict[str, Callable[[], Example]] = {
    "mlp": mlp,
    "cnn": cnn,
    "encoder": encoder,
    "gpt": gpt,
    "moe": moe,
}


def load(name: str) -> Example:
    """Build the zoo model `name`; raises KeyError listing the known names."""
    try:
        factory = ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}") from None
    return factory()
