"""Zoo models compiled for the Triton target through both front doors, against eager PyTorch."""

from __future__ import annotations

import pytest
import torch

from compiler import compile_model
from examples.zoo import load
from passes import DEFAULT_PIPELINE

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _check(name: str, pipeline: str | None = None):
    model, inputs = load(name)
    compiled = compile_model(model, inputs, target="triton", pipeline=pipeline, use_cache=False)
    with torch.no_grad():
        expected = model(*inputs)
    torch.testing.assert_close(compiled(*inputs), expected, atol=1e-4, rtol=1e-4)
    return compiled.report


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_zoo_model_matches_eager_with_fusion(name):
    report = _check(name)
    assert "fuse" in [p["name"] for p in report["passes"]]
    assert report["num_kernels"] < report["num_ops"]  # fused: fewer kernels than ops


def test_gpt_without_fusion_runs_one_kernel_per_op():
    report = _check("gpt", DEFAULT_PIPELINE)
    assert report["num_kernels"] == report["num_ops"]


@pytest.mark.parametrize("name", ["cnn", "encoder", "moe"])
def test_other_zoo_models_match_eager(name):
    """conv2d, pool2d and topk run through their reference; everything else in Triton."""
    _check(name)


def test_torch_compile_front_door():
    model, inputs = load("mlp")
    compiled = torch.compile(model, backend="kiln", options={"target": "triton"})
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=1e-4, rtol=1e-4)
