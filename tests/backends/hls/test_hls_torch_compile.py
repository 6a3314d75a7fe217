"""`torch.compile(model, backend="kiln", options={"target": "hls"})` and `kiln compile
--target hls --check`: the generated C++ runs, bit-exact with the emulation."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import hls_models
import torch
from hls_harness import CACHE, NEEDS_TOOLS, built, rel_rms

from examples import zoo

REPO = Path(__file__).resolve().parents[3]

pytestmark = NEEDS_TOOLS


def test_torch_compile_runs_the_mlp_through_the_c_simulation(caplog) -> None:
    torch._dynamo.reset()
    model, (x,) = zoo.mlp()
    compiled = torch.compile(model, backend="kiln", options={"target": "hls", "cache_dir": str(CACHE)})
    with caplog.at_level(logging.INFO, logger="compiler.torch_backend"):
        out = compiled(x)
    reports = [r.kiln_report for r in caplog.records if hasattr(r, "kiln_report")]
    assert reports and reports[-1]["target"] == "hls" and reports[-1]["fallback_ops"] == []
    hls = reports[-1]["decisions"]["hls"]
    assert hls["tb_bit_exact"] == 1 and hls["layers"] == 7
    _, _, _, kernel = built("mlp")  # the same design through the compile driver's own path
    assert torch.equal(out.double(), kernel.emulate(x)[0])
    assert rel_rms(out, model(x)) < 0.3
    torch._dynamo.reset()


def test_kiln_compile_check_with_part_and_clock(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    spec = f"{Path(hls_models.__file__).relative_to(REPO)}:encoder_layer"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", spec, "--target", "hls", "--check",
                           "--json", "--out", str(out), "--part", "xcvu9p-flga2104-2L-e", "--clock-ns", "3.3"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["check"] == "pass" and report["rel_rms_err"] < 0.05
    hls = report["decisions"]["hls"]
    assert hls["part"] == "xcvu9p-flga2104-2L-e" and hls["clock_ns"] == 3.3 and hls["budget_dsp"] == 6840
    assert "set_part {xcvu9p-flga2104-2L-e}" in (out / "hls" / "run_hls.tcl").read_text()
    assert json.loads((out / "hls" / "estimates.json").read_text())["latency_cycles"] == hls["latency_cycles"]
