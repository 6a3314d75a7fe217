"""Tests for the model zoo: every factory runs, is deterministic, and exports with torch.export.

The zoo is the common ground of all of Kiln's tests and benchmarks, so a model that silently
changes between two calls, or that stops exporting, would make every comparison meaningless.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from examples import zoo
from examples.blocks import MixtureOfExperts, RMSNorm

NAMES = sorted(zoo.ZOO)


def _run(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.inference_mode():
        return model(*inputs)


@pytest.mark.parametrize("name", NAMES)
def test_runs_in_eager_with_finite_output(name: str) -> None:
    model, inputs = zoo.load(name)
    assert not model.training
    assert isinstance(inputs, tuple) and all(isinstance(t, torch.Tensor) for t in inputs)
    out = _run(model, inputs)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_factory_is_deterministic_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    model_a, inputs_a = zoo.ZOO[name]()
    after = torch.rand(1)
    model_b, inputs_b = zoo.ZOO[name]()
    assert torch.equal(before, after), "the factory must not consume the caller's RNG"
    for a, b in zip(inputs_a, inputs_b, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(_run(model_a, inputs_a), _run(model_b, inputs_b))


@pytest.mark.parametrize("name", NAMES)
def test_exports_with_torch_export(name: str) -> None:
    model, inputs = zoo.load(name)
    program = torch.export.export(model, inputs)
    expected = _run(model, inputs)
    got = program.module()(*inputs)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_load_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError, match="known: mlp"):
        zoo.load("resnet1000")


def test_gpt_layers_builds_other_depths() -> None:
    model, inputs = zoo.gpt_layers(1, seq=8)
    assert len(model.blocks) == 1
    assert _run(model, inputs).shape == (2, 8, 2000)


def test_rms_norm_matches_torch() -> None:
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 16)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, norm.eps))


def test_encoder_padding_mask_hides_padded_tokens() -> None:
    model, (ids, mask) = zoo.encoder()
    assert not mask.all(), "the example must contain padding for the mask to matter"
    changed = torch.where(mask, ids, (ids + 1) % 2000)
    real = mask.unsqueeze(-1)
    out_a, out_b = _run(model, (ids, mask)), _run(model, (changed, mask))
    torch.testing.assert_close(out_a * real, out_b * real, rtol=1e-4, atol=1e-5)


def test_moe_routing_picks_top_k_with_normalized_weights() -> None:
    torch.manual_seed(0)
    layer = MixtureOfExperts(dim=16, hidden=8, experts=8, top_k=2)
    top_i, top_w = layer.route(torch.randn(5, 16))
    assert top_i.shape == top_w.shape == (5, 2)
    torch.testing.assert_close(top_w.sum(-1), torch.ones(5))
    assert (top_i[:, 0] != top_i[:, 1]).all()


def test_moe_dense_combination_matches_per_token_loop() -> None:
    torch.manual_seed(0)
    layer = MixtureOfExperts(dim=16, hidden=8, experts=4, top_k=2)
    x = torch.randn(1, 3, 16)
    tokens = x[0]
    top_i, top_w = layer.route(tokens)
    expected = torch.zeros_like(tokens)
    for t in range(tokens.shape[0]):
        for slot in range(2):
            e = int(top_i[t, slot])
            h = F.silu(tokens[t] @ layer.w_gate[e]) * (tokens[t] @ layer.w_up[e])
            expected[t] += top_w[t, slot] * (h @ layer.w_down[e])
    torch.testing.assert_close(layer(x)[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_compiles_with_inductor(name: str) -> None:
    model, inputs = zoo.load(name)
    expected = _run(model, inputs)
    got = _run(torch.compile(model), inputs)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
