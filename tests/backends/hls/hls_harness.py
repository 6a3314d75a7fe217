"""Shared helpers for the HLS backend tests: capture a model, build it once, FileCheck.

Builds are memoized per test session and share one artifact cache folder (a temporary
directory, so the tests neither read nor fill the user's cache). The basename is unique
because the test folders are not packages.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hls_models
import pytest
import torch

from backends import BuildOptions, get_backend
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from compiler.capture.partition import IGNORED
from examples import zoo
from ir.program import Program
from passes import DEFAULT_PIPELINE, run_pipeline

NEEDS_TOOLS = pytest.mark.skipif(
    shutil.which("g++") is None or importlib.util.find_spec("hls4ml") is None,
    reason="C simulation needs g++ and the ap_types headers of hls4ml (pip install 'kiln[hls]')")
CACHE = Path(tempfile.mkdtemp(prefix="kiln-hls-tests-"))
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
MODELS = {"mlp": zoo.mlp, "cnn": zoo.cnn, "encoder_layer": hls_models.encoder_layer, "op_mix": hls_models.op_mix}


def capture(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Program:
    """The model's one partition as a Program, before any pass."""
    graph = from_model(model, inputs)
    plan = plan_partitions(graph)
    parts = plan.partitions()
    assert len(parts) == 1 and not plan.failures, plan.failures
    return convert_nodes(parts[0], plan.consts, users_outside(parts[0], IGNORED)).program


# hls4ml's setup: uniform ap_fixed<16,6>, no calibration (the backend's default pipeline
# calibrates 16-bit types per tensor instead, see HLSBackend.pipeline)
UNIFORM_PIPELINE = f"{DEFAULT_PIPELINE},hls-reuse"


def program_of(name: str, pipeline: str | None = None) -> tuple[torch.nn.Module, tuple, Program]:
    model, inputs = MODELS[name]()
    program = capture(model, inputs)
    pipeline = pipeline or get_backend("hls").pipeline()
    if "quantize" in pipeline:
        from compiler.calibration import run_pipeline_quantized

        run_pipeline_quantized(program, pipeline, inputs)
    else:
        run_pipeline(program.module, pipeline)
    return model, inputs, program


@functools.cache
def built(name: str, pipeline: str | None = None, extra: tuple[tuple[str, str], ...] = ()):
    """(model, inputs, program, kernel), built once per session."""
    model, inputs, program = program_of(name, pipeline)
    out = CACHE / "out" / f"{name}-{abs(hash((pipeline, extra)))}"
    kernel = get_backend("hls").build(program, BuildOptions(cache_dir=CACHE, out_dir=out, extra=dict(extra)))
    return model, inputs, program, kernel


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float(((a - b) ** 2).sum().sqrt() / (b**2).sum().sqrt())


def filecheck(output: str, checks: str) -> None:
    """Fail with FileCheck's own report unless `output` satisfies the CHECK lines in `checks`."""
    with tempfile.NamedTemporaryFile("w", suffix=".check", delete=False) as f:
        f.write(checks)
    try:
        proc = subprocess.run([sys.executable, "-m", "filecheck", f.name], input=output, capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        Path(f.name).unlink()
    if proc.returncode != 0:
        pytest.fail(f"FileCheck failed:\n{proc.stderr}", pytrace=False)
