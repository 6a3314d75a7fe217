"""`kiln tune` and `kiln compile` as a user runs them (compiler/commands/tune_cmd.py).

Subprocesses with XDG_CACHE_HOME pointed at a temporary folder, so the local tuning cache,
the training set and the artifact cache are the test's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = str(Path(__file__).with_name("tuner_models.py").relative_to(REPO))


def kiln(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args], check=False, cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )


def test_tune_then_compile_reads_the_winners_and_measures_nothing(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "KILN_CACHE": ""}
    tuned = kiln("tune", f"{MODELS}:two_kernels", "--trials", "3", "--json",
                 "--train-cost-model", env=env)
    assert tuned.returncode == 0, tuned.stderr
    report = json.loads(tuned.stdout)
    assert [row["status"] for row in report["kernels"]] in (
        ["tuned"], ["defaults best"], ["rejected by model check"])
    assert report["cache"] == "local" and report["failed"] == 0
    # trained (one kernel: no held-out), or said why not: a kernel timed within the
    # library call's noise has no label (compiler/tuner/worker.py)
    assert "cost model" in tuned.stderr or report.get("cost_model")
    records = tmp_path / "kiln" / "tuning" / "records.jsonl"
    measured = records.read_text().count("\n")
    assert measured >= 3
    compiled = kiln("compile", f"{MODELS}:two_kernels", "--json", "--check", env=env)
    assert compiled.returncode == 0, compiled.stderr
    assert json.loads(compiled.stdout)["tuning_hits"] == 1
    assert records.read_text().count("\n") == measured  # nothing measured by the compile
    again = kiln("tune", f"{MODELS}:two_kernels", "--json", env=env)
    assert [row["status"] for row in json.loads(again.stdout)["kernels"]] == ["cached"]


def test_tune_refuses_other_targets_in_one_line(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    result = kiln("tune", f"{MODELS}:two_kernels", "--target", "triton", env=env)
    assert result.returncode == 2
    assert "supports --target tvm only" in result.stderr and "Traceback" not in result.stderr
