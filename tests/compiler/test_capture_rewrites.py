"""Capture rewrites: fast-path decompositions equal torch's fused ops, in-place ops become
functional only where that is exact, and the FLOP count Kiln reports is torch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compiler.capture import from_model
from compiler.capture.fastpath import native_multi_head_attention, transformer_encoder_layer
from compiler.capture.flops import node_flops
from compiler.capture.functionalize import functional_variant, functionalize

aten = torch.ops.aten


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("mask", [None, "padding"])
def test_encoder_layer_decomposition_equals_the_fast_path(norm_first, activation, mask):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, activation=activation, batch_first=True,
                                       norm_first=norm_first).eval()
    x = torch.randn(3, 7, 32)
    padding = None
    if mask:
        padding = torch.zeros(3, 7, dtype=torch.bool)
        padding[1, -2:] = True
    attn = layer.self_attn
    args = (x, 32, 4, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias,
            activation == "gelu", norm_first, layer.norm1.eps, layer.norm1.weight, layer.norm1.bias,
            layer.norm2.weight, layer.norm2.bias, layer.linear1.weight, layer.linear1.bias, layer.linear2.weight,
            layer.linear2.bias, padding, 1 if mask else None)
    with torch.no_grad():
        expected = torch._transformer_encoder_layer_fwd(*args)
        got = transformer_encoder_layer(*args)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_mha_decomposition_equals_the_fast_path_with_weights():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    args = (q, k, v, 16, 2, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
    with torch.no_grad():
        out, weights = torch._native_multi_head_attention(*args, need_weights=True)
        got, got_weights = native_multi_head_attention(*args, need_weights=True)
    torch.testing.assert_close(got, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_weights, weights, atol=1e-5, rtol=1e-5)


def test_functional_variants():
    assert functional_variant(aten.add_.Tensor) is aten.add.Tensor
    assert functional_variant(aten.div_.Tensor) is aten.div.Tensor
    assert functional_variant(aten.add.Tensor) is None  # already functional
    assert functional_variant(aten.copy_.default) is aten.copy.default  # src broadcast to self's shape
    assert functional_variant(aten.relu.default) is None


class InPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * 2
        h += 1  # on a fresh tensor: rewritten
        return h.relu()


class InPlaceThroughView(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * 2
        v = h[:, :2]
        v.mul_(10)  # writes h through a view: must stay in place
        return h


def _targets(graph) -> list:
    return [n.target for n in graph.graph.nodes if n.op == "call_function"]


def test_in_place_on_a_fresh_tensor_becomes_functional():
    graph = from_model(InPlace(), (torch.randn(3, 4),))
    assert aten.add.Tensor in _targets(graph) and aten.add_.Tensor not in _targets(graph)
    assert any("in-place" in note for note in graph.notes)


def test_in_place_through_a_view_is_left_alone_and_still_correct():
    x = torch.randn(3, 4)
    graph = from_model(InPlaceThroughView(), (x,))
    assert aten.mul_.Tensor in _targets(graph)
    from compiler import compile_model

    cm = compile_model(InPlaceThroughView(), (x,), target="eager")
    torch.testing.assert_close(cm(x), InPlaceThroughView()(x))


def test_functionalize_skips_writes_to_placeholders():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    y = graph.call_function(aten.add_.Tensor, (x, 1.0))
    graph.output(y)
    assert functionalize(graph) == 0


def test_flops_of_a_linear_are_torch_counts():
    model = nn.Linear(32, 16)
    graph = from_model(model, (torch.randn(5, 32),))
    nodes = [n for n in graph.graph.nodes if n.op == "call_function"]
    assert node_flops(nodes) == 2 * 5 * 32 * 16
