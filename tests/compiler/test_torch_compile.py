"""Tests for compiler/torch_backend.py: `torch.compile(model, backend="kiln")`.

The backend is found by name through the `torch_dynamo_backends` entry point, so these
tests never import it. Dynamo keeps the compiled callable to itself; each compile's report
reaches the test through the INFO record the backend logs (`record.kiln_report`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest
import torch
from models_for_tests import (
    UNSUPPORTED_OP,
    CountsCalls,
    cumsum_between_linears,
    example,
)

from backends import TARGETS
from examples import zoo

NAMES = sorted(zoo.ZOO)
TOL = {"atol": 1e-4, "rtol": 1e-4}
LOGGER = "compiler.torch_backend"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def reports(caplog: pytest.LogCaptureFixture):
    """Call it for the reports of every Kiln compile so far in the test, in order."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    return lambda: [r.kiln_report for r in caplog.records if hasattr(r, "kiln_report")]


def _eager(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_on_tvm_matches_eager(name: str, tmp_path, reports) -> None:
    model, inputs = zoo.load(name)
    options = {"target": "tvm", "cache_dir": tmp_path}
    compiled = torch.compile(model, backend="kiln", options=options)
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)
    [report] = reports()
    assert report["target"] == "tvm"
    assert report["fallback_ops"] == []
    assert report["num_kernels"] > 0


def test_runs_with_grad_enabled_and_returns_plain_tensors(tmp_path) -> None:
    model, inputs = zoo.load("mlp")
    compiled = torch.compile(model, backend="kiln", options={"cache_dir": tmp_path})
    out = compiled(*inputs)  # no torch.no_grad() around the call: Kiln compiles inference
    torch.testing.assert_close(out, _eager(model, inputs), **TOL)
    assert not out.requires_grad


def test_second_call_reuses_the_compiled_graph(tmp_path, reports) -> None:
    model, inputs = zoo.load("mlp")
    compiled = torch.compile(model, backend="kiln", options={"cache_dir": tmp_path})
    first = compiled(*inputs)
    second = compiled(*inputs)
    assert torch.equal(first, second)
    assert len(reports()) == 1


def test_eager_option_selects_the_eager_target(reports) -> None:
    model, inputs = zoo.load("cnn")
    compiled = torch.compile(model, backend="kiln", options={"target": "eager"})
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)
    [report] = reports()
    assert report["target"] == "eager"
    assert report["num_partitions"] == 1


def test_unknown_option_key_is_a_clear_error() -> None:
    model, inputs = zoo.load("mlp")
    compiled = torch.compile(model, backend="kiln", options={"targte": "tvm"})
    message = r"unknown kiln option\(s\) \['targte'\]; known: .*'target'"
    with pytest.raises(Exception, match=message):
        compiled(*inputs)


def test_unknown_target_lists_the_known_ones() -> None:
    model, inputs = zoo.load("mlp")
    compiled = torch.compile(model, backend="kiln", options={"target": "fpga"})
    known = ", ".join(sorted(TARGETS))
    with pytest.raises(Exception, match=f"unknown target 'fpga'; known targets: {known}"):
        compiled(*inputs)


@pytest.mark.parametrize("target", ["eager", "tvm"])
def test_unsupported_op_runs_in_eager_and_is_reported(target: str, tmp_path, reports) -> None:
    model, inputs = cumsum_between_linears(n_cumsum=2)
    options = {"target": target, "cache_dir": tmp_path}
    compiled = torch.compile(model, backend="kiln", options=options)
    torch.testing.assert_close(compiled(*inputs), _eager(model, inputs), **TOL)
    [report] = reports()
    assert report["fallback_ops"] == [{"op": UNSUPPORTED_OP, "count": 2}]
    assert report["num_partitions"] == 3


def test_strict_option_turns_a_fallback_into_an_error() -> None:
    model, inputs = cumsum_between_linears()
    compiled = torch.compile(model, backend="kiln", options={"target": "eager", "strict": True})
    with pytest.raises(Exception, match=r"unsupported op aten\.cumsum"):
        compiled(*inputs)


def test_graph_kiln_cannot_capture_runs_in_eager_with_a_warning(reports) -> None:
    model, inputs = example(CountsCalls, (2, 8))
    reference, _ = example(CountsCalls, (2, 8))
    compiled = torch.compile(model, backend="kiln", options={"target": "eager"})
    with pytest.warns(UserWarning, match="kiln: running this graph in eager: the model mutates"):
        outs = [compiled(*inputs) for _ in range(3)]
    for out in outs:  # the buffer counts calls: 1, 2, 3, as in eager
        torch.testing.assert_close(out, _eager(reference, inputs), **TOL)
    assert torch.equal(model.calls, reference.calls)
    assert len(reports()) == 0


def test_dynamic_shapes_compile_per_shape_without_a_warning() -> None:
    """dynamic=True used to run in eager with a warning; now each shape is compiled
    (tests/compiler/test_shape_changes.py checks the compiles themselves)."""
    model, inputs = zoo.load("mlp")
    compiled = torch.compile(model, backend="kiln", dynamic=True, options={"target": "eager"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = compiled(*inputs)
    torch.testing.assert_close(out, _eager(model, inputs), **TOL)


def test_backend_is_registered_without_importing_kiln() -> None:
    script = (
        "import sys, torch\n"
        "assert 'compiler' not in sys.modules\n"
        "m = torch.nn.Linear(4, 3).eval()\n"
        "x = torch.randn(2, 4)\n"
        "y = torch.compile(m, backend='kiln', options={'target': 'eager'})(x)\n"
        "torch.testing.assert_close(y, m(x))\n"
        "print('compiler.torch_backend' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
