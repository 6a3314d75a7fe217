"""Tests for compiler/runner.py: compiled partitions and eager nodes run in order.

The shapes of graph that the level partitioner produces: an eager node between two
partitions, eager nodes at the edges (fed by the user input, producing outputs), an eager
node beside a partition, an eager op with two results, and a graph with no partition at all.
"""

from __future__ import annotations

import pytest
import torch
from models_for_tests import (
    UNSUPPORTED_OP,
    ParallelBranch,
    SortThenLinear,
    UnsupportedAtEdges,
    cumsum_between_linears,
    example,
)

from compiler import compile_model
from compiler.runner import GraphRunner

TOL = {"atol": 1e-4, "rtol": 1e-4}


def _eager(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]):
    with torch.no_grad():
        return model(*inputs)


@pytest.mark.parametrize("target", ["eager", "tvm"])
def test_eager_node_between_two_partitions(target: str, tmp_path) -> None:
    model, inputs = cumsum_between_linears()
    compiled = compile_model(model, inputs, target=target, cache_dir=tmp_path)
    report = compiled.report
    assert report["num_partitions"] == 2
    assert report["fallback_ops"] == [{"op": UNSUPPORTED_OP, "count": 1}]
    assert len(report["partitions"]) == 2
    assert all(p["num_ops"] > 0 for p in report["partitions"])
    assert report["num_ops"] == sum(p["num_ops"] for p in report["partitions"])
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)
    other = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(compiled(other), _eager(model, (other,)), **TOL)


def test_partitions_follow_the_eager_nodes() -> None:
    model, inputs = cumsum_between_linears(n_cumsum=3)
    compiled = compile_model(model, inputs, target="eager")
    assert compiled.report["num_partitions"] == 4
    assert isinstance(compiled._run, GraphRunner)
    kinds = ["eager" if step.eager else "kiln" for step in compiled._run.steps]
    assert kinds == ["kiln", "eager", "kiln", "eager", "kiln", "eager", "kiln"]
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)


def test_whole_graph_in_one_partition_skips_the_runner() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    inputs = (torch.randn(2, 8),)
    compiled = compile_model(model, inputs, target="eager")
    assert not isinstance(compiled._run, GraphRunner)
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)


def test_eager_nodes_at_the_edges_and_pytree_outputs() -> None:
    model, inputs = example(UnsupportedAtEdges, (4, 8))
    compiled = compile_model(model, inputs, target="eager")
    assert compiled.report["fallback_ops"] == [{"op": UNSUPPORTED_OP, "count": 2}]
    out, expected = compiled(*inputs), _eager(model, inputs)
    assert set(out) == set(expected)
    torch.testing.assert_close(out, expected, **TOL)


def test_eager_node_beside_a_partition() -> None:
    model, inputs = example(ParallelBranch, (4, 8))
    compiled = compile_model(model, inputs, target="eager")
    # The add after the eager cumsum sits one level up, so it is a partition of its own.
    assert compiled.report["num_partitions"] == 2
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)


def test_eager_op_with_two_results_feeds_a_partition() -> None:
    model, inputs = example(SortThenLinear, (4, 8))
    compiled = compile_model(model, inputs, target="eager")
    assert {"op": "aten.sort", "count": 1} in compiled.report["fallback_ops"]
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)


def test_graph_with_no_supported_op_runs_all_in_eager() -> None:
    class OnlyCumsum(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=0)

    x = torch.randn(5, 3)
    compiled = compile_model(OnlyCumsum(), (x,), target="eager")
    assert compiled.report["num_partitions"] == 0
    assert compiled.report["cache_hit"] is False
    torch.testing.assert_close(compiled(x), torch.cumsum(x, dim=0))


def test_partition_outputs_are_in_graph_order() -> None:
    """The moe model has nodes read only by metadata asserts; they must not become results,
    and the results' order must not depend on set iteration (it is part of the cache key)."""
    from examples import zoo

    model, inputs = zoo.load("moe")
    texts = set()
    for _ in range(2):
        compiled = compile_model(model, inputs, target="eager")
        assert not isinstance(compiled._run, GraphRunner)  # one partition, one result
        texts.add(compiled._run.program.text())
    assert len(texts) == 1
