"""Routing traces: recorded by structure from torch models, generated with stated skew, read back."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from benchmarks.expert_traces import generate
from compiler.cli import app
from compiler.trace_experts import sample_inputs, trace_model
from examples.blocks import MixtureOfExperts
from passes.experts.cost import expert_loads
from passes.experts.trace import load_trace


class TwoMoE(torch.nn.Module):
    """Two zoo MoE layers; the tracer must find both routers without knowing the class."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = MixtureOfExperts(16, 8, experts=6, top_k=2)
        self.b = MixtureOfExperts(16, 8, experts=6, top_k=2)
        self.attn_like = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.softmax(x @ x.transpose(1, 2), dim=-1)  # a softmax that is no router
        x = x + scores @ self.attn_like(x)
        return self.b(self.a(x))


def test_recorded_routing_equals_each_routers_own_topk():
    model = TwoMoE().eval()
    x = torch.randn(2, 5, 16)
    trace = trace_model(model, [(x,)], "two")
    assert (trace.layers, trace.experts, trace.top_k, trace.tokens) == (2, 6, 2, 10)
    with torch.no_grad():
        h = x + torch.softmax(x @ x.transpose(1, 2), dim=-1) @ model.attn_like(x)
        idx, _ = model.a.route(h.reshape(10, 16))
    assert np.array_equal(trace.calls[0][0], idx.numpy())


def test_switch_style_top1_argmax_router_is_recorded():
    class Switch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.router = torch.nn.Linear(8, 4)

        def forward(self, x):
            probs = torch.nn.functional.softmax(self.router(x), dim=-1)
            return x * probs.max(dim=-1).values[..., None] + torch.argmax(probs, dim=-1)[..., None]

    trace = trace_model(Switch(), [(torch.randn(3, 8),)], "switch")
    assert (trace.layers, trace.experts, trace.top_k) == (1, 4, 1)


def test_hf_switch_transformers_top1_routers_are_found():
    from benchmarks.expert_models import switch

    model, inputs = switch()
    trace = trace_model(model, [inputs], "switch")
    assert (trace.layers, trace.experts, trace.top_k, trace.tokens) == (2, 4, 1, 32)  # encoder + decoder layer


def test_generated_trace_is_skewed_and_has_affinity():
    t = generate(layers=4, experts=16, tokens=512, calls=2, zipf=1.2, affinity=0.8, seed=1)
    loads = expert_loads(t)[0] / expert_loads(t)[0].sum()
    assert loads.max() > 4 / 16  # Zipf: the hottest expert takes far more than 1/E
    a, b = t.calls[0][0][:, 0], t.calls[0][1][:, 0]
    joint = np.zeros((16, 16))
    np.add.at(joint, (a, b), 1)
    # Given the layer-0 top-1 expert, the layer-1 top-1 is concentrated on few experts.
    rows = joint[joint.sum(1) >= 20]
    assert (np.sort(rows, 1)[:, -3:].sum(1) / rows.sum(1)).mean() > 0.6
    assert all(len(set(r)) == 2 for r in t.calls[0][0].tolist())  # top-k choices are distinct


def test_trace_experts_command_writes_a_trace_and_refuses_a_dense_model(tmp_path):
    out = tmp_path / "t.json"
    runner = CliRunner()
    ok = runner.invoke(app, ["trace-experts", "examples/zoo.py:moe", "--samples", "2", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    trace = load_trace(out)
    assert (trace.layers, trace.experts, trace.top_k, len(trace.calls)) == (2, 8, 2, 2)
    assert trace.weights is not None and trace.source == "recorded"
    bad = runner.invoke(app, ["trace-experts", "examples/zoo.py:mlp", "--samples", "1", "--out", str(out)])
    assert bad.exit_code == 2 and "no MoE router" in bad.output


def test_sample_inputs_keep_token_ids_in_range():
    ids = torch.randint(0, 50, (2, 7))
    for (x,) in sample_inputs((ids,), 3):
        assert x.shape == ids.shape and x.dtype == ids.dtype and int(x.max()) <= int(ids.max())
