"""Tests for backends/registry.py and the eager backend behind the common protocol."""

from __future__ import annotations

import pytest
import torch

from backends import TARGETS, BuildOptions, UnknownTargetError, get_backend
from ir import OPS_BY_NAME, Program, parse_module
from passes import DEFAULT_PIPELINE

# y = relu(x @ w^T + b) * 2, with w and b as named parameters.
SMALL_PROGRAM = """\
builtin.module {
  func.func @forward(%x: tensor<2x4xf32>) -> tensor<2x3xf32> {
    %w = "kiln.param"() <{name = "w"}> : () -> tensor<3x4xf32>
    %b = "kiln.param"() <{name = "b"}> : () -> tensor<3xf32>
    %two = "kiln.constant"() <{value = dense<2.0> : tensor<f32>}> : () -> tensor<f32>
    %h = "kiln.linear"(%x, %w, %b) : (tensor<2x4xf32>, tensor<3x4xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %r = "kiln.relu"(%h) : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %y = "kiln.mul"(%r, %two) : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
    func.return %y : tensor<2x3xf32>
  }
}
"""


def test_unknown_target_lists_the_known_ones() -> None:
    known = ", ".join(sorted(TARGETS))
    with pytest.raises(UnknownTargetError, match=f"unknown target 'nope'; known targets: {known}"):
        get_backend("nope")


def test_unknown_target_is_a_value_error() -> None:
    assert issubclass(UnknownTargetError, ValueError)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_registered_target_loads_under_its_name(target: str) -> None:
    backend = get_backend(target)
    assert backend.name == target
    assert backend.capabilities().ops <= frozenset(OPS_BY_NAME)
    assert backend.pipeline()


def test_eager_backend_runs_a_small_program() -> None:
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    x = torch.randn(2, 4, generator=g)
    program = Program(parse_module(SMALL_PROGRAM), {"w": w, "b": b})
    backend = get_backend("eager")
    kernel = backend.build(program, BuildOptions())
    [y] = kernel(x)
    torch.testing.assert_close(y, torch.relu(torch.nn.functional.linear(x, w, b)) * 2)
    assert kernel.num_kernels == 3  # params and constants are not kernels
    assert kernel.cache_hit is False
    assert kernel.artifacts == {}


def test_eager_backend_covers_every_op_and_runs_the_default_pipeline() -> None:
    backend = get_backend("eager")
    assert backend.capabilities().ops == frozenset(OPS_BY_NAME)
    assert backend.pipeline() == DEFAULT_PIPELINE
