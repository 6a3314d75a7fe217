"""What the HLS backend refuses, and how it says so: one line naming the op and its node."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import hls_models
import pytest
from hls_harness import CACHE, NEEDS_TOOLS, capture

from backends import BackendError, BuildOptions, get_backend
from passes import run_pipeline

REPO = Path(__file__).resolve().parents[3]

pytestmark = NEEDS_TOOLS


def _build(factory, pipeline: str | None = None) -> None:
    model, inputs = factory()
    program = capture(model, inputs)
    if pipeline and "quantize" in pipeline:
        from compiler.calibration import run_pipeline_quantized

        run_pipeline_quantized(program, pipeline, inputs)
    else:
        run_pipeline(program.module, pipeline or get_backend("hls").pipeline())
    get_backend("hls").build(program, BuildOptions(cache_dir=CACHE))


def test_an_unsupported_op_names_the_op_and_its_node() -> None:
    with pytest.raises(BackendError, match=r"^kiln\.exp in forward \(op 3\) has no lowering for target 'hls'; "
                                           r"the HLS backend emits .*kiln\.linear"):
        _build(hls_models.exp_model)


def test_capabilities_list_what_the_backend_emits() -> None:
    ops = get_backend("hls").capabilities().ops
    assert {"kiln.linear", "kiln.conv2d", "kiln.softmax", "kiln.gelu", "kiln.layer_norm", "kiln.pool2d"} <= ops
    assert "kiln.exp" not in ops and "kiln.embedding" not in ops


def test_a_softmax_over_the_batch_is_refused() -> None:
    with pytest.raises(BackendError, match=r"kiln\.softmax in forward \(op 0\) normalizes dim 0"):
        _build(hls_models.batch_softmax)


def test_a_format_that_is_not_fixed_point_is_refused() -> None:
    pipeline = "fold-constants,kiln-canonicalize,cse,dce,quantize{formats=int8},hls-reuse"
    with pytest.raises(BackendError, match=r"kiln\.linear in forward \(op \d+\) is quantized to int8, which the HLS "
                                           r"backend cannot emit \(ap_fixed only\); quantize with fixed-point formats"):
        _build(hls_models.exp_model, pipeline)


def test_bad_build_options_are_one_line_errors() -> None:
    from backends.hls.config import HLSConfig

    with pytest.raises(BackendError, match="unknown FPGA part 'xcnope'"):
        HLSConfig.from_extra({"part": "xcnope"})
    with pytest.raises(BackendError, match="clock-ns must be > 0"):
        HLSConfig.from_extra({"clock-ns": "0"})


def test_the_cli_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    spec = f"{Path(hls_models.__file__).relative_to(REPO)}:exp_model"
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", spec, "--target", "hls"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: kiln\.exp in forward \(op \d+\) has no lowering for target 'hls'", lines[0])
    assert "Traceback" not in done.stderr
