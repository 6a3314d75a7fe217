"""One Dynamo graph, two modules: Kiln must run each call with the caller's weights.

Dynamo's guards check shapes and dtypes of lifted parameters, not which tensors they are,
so one compiled graph serves every instance of a module class (an MoE layer's experts).
Kiln binds weights at compile time; `compiler/state_guard.py` recompiles for new ones."""

from __future__ import annotations

import logging

import torch
from torch import nn

from compiler.state_guard import StateGuarded, state_positions


def _block(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)).eval()


def test_same_graph_other_instance_uses_the_other_weights(caplog):
    torch._dynamo.reset()
    first, second = _block(0), _block(1)
    call = torch.compile(lambda module, x: module(x), backend="kiln")
    x = torch.randn(3, 16)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="compiler.torch_backend"):
        for module in (first, second, first, second):
            torch.testing.assert_close(call(module, x), module(x), atol=1e-5, rtol=1e-5)
    compiles = [r for r in caplog.records if hasattr(r, "kiln_report")]
    assert len(compiles) == 2  # one per weight set, each reused afterwards


def test_guard_dispatches_by_identity_and_is_bounded():
    a, b, c = torch.ones(2), torch.ones(2), torch.ones(2)
    built = []

    def compile_fn(args):
        built.append(args[1])
        return lambda *call: ("other", call[1] is args[1])

    guard = StateGuarded([1], [torch.zeros(1), a], lambda *call: ("first",), compile_fn, max_sets=1)
    assert guard(torch.zeros(1), a) == ("first",)
    assert guard(torch.zeros(1), b) == ("other", True)
    assert guard(torch.zeros(1), b) == ("other", True) and len(built) == 1  # reused
    assert guard(torch.zeros(1), c) == ("other", True) and len(built) == 2
    assert guard(torch.zeros(1), b) == ("other", True) and len(built) == 3  # b was evicted by c


def test_state_positions_are_the_bound_tensors():
    inputs = [torch.ones(1), torch.ones(2), 3, torch.ones(3)]
    assert state_positions(inputs, [0]) == [1, 3]
    assert state_positions(inputs, None) == []
