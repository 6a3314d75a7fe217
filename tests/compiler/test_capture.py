"""Tests for compiler/capture: both front ends on the zoo, fallback, strict mode, state writes.

Numbers are checked through the eager target, whose kernels are the reference interpreter
(`ir.run` over each partition's kiln IR), so a capture that changes the math shows here
before any backend is involved.
"""

from __future__ import annotations

import pytest
import torch
from models_for_tests import (
    UNSUPPORTED_OP,
    CountsCalls,
    InPlaceOnActivations,
    WritesKVCache,
    cumsum_between_linears,
    example,
    grid_sample_between_convs,
)

from compiler import CompileOptions, compile_model
from compiler.capture import (
    AtenGraph,
    CaptureError,
    StrictCaptureError,
    from_dynamo,
    from_model,
    plan_partitions,
)
from compiler.driver import compile_fx
from examples import zoo

NAMES = sorted(zoo.ZOO)
TOL = {"atol": 1e-4, "rtol": 1e-4}


def _eager(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


class RecordingBackend:
    """A torch.compile backend that captures with `from_dynamo`, keeps what it saw, and runs
    the graph through Kiln's eager target."""

    def __init__(self) -> None:
        self.captured: list[AtenGraph] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        self.captured.append(from_dynamo(gm, example_inputs))
        return compile_fx(gm, example_inputs, CompileOptions(target="eager")).flat


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", NAMES)
def test_export_front_end_captures_every_op(name: str) -> None:
    model, inputs = zoo.load(name)
    graph = from_model(model, inputs)
    plan = plan_partitions(graph)
    assert plan.failures == {}
    assert plan.fallback_counts() == []
    assert len(graph.inputs) == len(inputs)
    assert len(plan.partitions()) == 1


@pytest.mark.parametrize("name", NAMES)
def test_interpreter_matches_pytorch_on_export_capture(name: str) -> None:
    model, inputs = zoo.load(name)
    compiled = compile_model(model, inputs, target="eager")
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)
    report = compiled.report
    assert report["target"] == "eager"
    assert report["fallback_ops"] == []
    assert report["num_partitions"] == 1
    assert report["num_ops"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_dynamo_front_end_captures_every_op_and_matches_pytorch(name: str) -> None:
    model, inputs = zoo.load(name)
    backend = RecordingBackend()
    out = torch.compile(model, backend=backend)(*inputs)
    torch.testing.assert_close(out, _eager(model, inputs), **TOL)
    assert len(backend.captured) == 1, "one graph expected (no graph breaks)"
    graph = backend.captured[0]
    # Dynamo lifts parameters to graph inputs; capture binds them, leaving the user's tensors.
    assert len(graph.inputs) == len(inputs)
    assert graph.consts
    plan = plan_partitions(graph)
    assert plan.failures == {}
    assert plan.fallback_counts() == []


def test_both_front_ends_see_the_same_aten_ops() -> None:
    model, inputs = zoo.load("encoder")
    backend = RecordingBackend()
    torch.compile(model, backend=backend)(*inputs)

    def ops(graph: AtenGraph) -> list[str]:
        return sorted(str(n.target) for n in graph.graph.nodes if n.op == "call_function")

    assert ops(backend.captured[0]) == ops(from_model(model, inputs))


@pytest.mark.parametrize(
    ("factory", "op", "count"),
    [
        (lambda: cumsum_between_linears(n_cumsum=2), UNSUPPORTED_OP, 2),
        (grid_sample_between_convs, "aten.grid_sampler", 1),
    ],
    ids=["cumsum", "grid_sample"],
)
def test_unsupported_op_falls_back_to_eager_and_is_reported(factory, op: str, count: int) -> None:
    model, inputs = factory()
    compiled = compile_model(model, inputs, target="eager")
    assert compiled.report["fallback_ops"] == [{"op": op, "count": count}]
    assert any(reason.startswith(op) for reason in compiled.report["fallback_reasons"])
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)


def test_unsupported_op_is_named_by_the_partition_plan() -> None:
    model, inputs = cumsum_between_linears()
    plan = plan_partitions(from_model(model, inputs))
    [(node, err)] = plan.failures.items()
    assert (err.op, err.node) == (UNSUPPORTED_OP, node.name)
    assert "no kiln lowering" in err.reason


def test_strict_mode_raises_naming_the_op_and_node() -> None:
    model, inputs = cumsum_between_linears()
    with pytest.raises(StrictCaptureError, match=r"aten\.cumsum .*\(node cumsum\)"):
        compile_model(model, inputs, target="eager", strict=True)


def test_strict_mode_accepts_a_fully_supported_model() -> None:
    model, inputs = zoo.load("mlp")
    compiled = compile_model(model, inputs, target="eager", strict=True)
    assert compiled.report["fallback_ops"] == []


@pytest.mark.parametrize(
    ("model_cls", "shape", "state"),
    [(CountsCalls, (2, 8), "calls"), (WritesKVCache, (3, 4), "cache")],
    ids=["buffer-add_", "copy_-into-a-view"],
)
def test_writing_module_state_is_a_capture_error(model_cls, shape, state: str) -> None:
    model, inputs = example(model_cls, shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CaptureError, match=rf"mutates \w*{state}.*without state updates"):
        compile_model(model, inputs, target="eager")
    for key, value in model.state_dict().items():  # capture must not have run the write
        assert torch.equal(value, before[key]), key


def test_in_place_ops_on_intermediates_are_captured() -> None:
    model, inputs = example(InPlaceOnActivations, (4, 8))
    compiled = compile_model(model, inputs, target="eager")
    expected = _eager(model, inputs)
    for _ in range(2):  # a fold or an eager in-place op that leaks would differ on the second call
        torch.testing.assert_close(compiled(*inputs), expected, **TOL)


class MasksPositives(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return (y[y > 0] * 2).sum() + y.sum()  # y[y > 0] has a data-dependent size


def test_data_dependent_shapes_run_in_eager() -> None:
    model, inputs = example(MasksPositives, (3, 5))
    compiled = compile_model(model, inputs, target="eager")
    ops = {f["op"] for f in compiled.report["fallback_ops"]}
    assert "aten.index.Tensor" in ops
    other = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(compiled(other), _eager(model, (other,)), **TOL)


def test_export_failure_is_a_one_line_capture_error_naming_the_model() -> None:
    class BranchesOnAValue(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + float(x.sum().item() > 0)  # a Python value read from a tensor

    with pytest.raises(CaptureError, match="BranchesOnAValue") as info:
        from_model(BranchesOnAValue(), (torch.randn(5),))
    assert "\n" not in str(info.value)
