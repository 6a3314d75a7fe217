"""`benchmarks.tuning_report`: the headline geomean counts only models whose tuned configs
differ from the defaults, and every ratio carries its round-by-round spread.

The README once counted the encoder at 1.198 although the model check had rejected its
winners: tuned and untuned ran the same configs, so that ratio was timing noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.tuning_report import main, render, tuned_differs, tuned_geomean

ROOT = Path(__file__).resolve().parents[2]


def row(model: str, ratio: float, non_default: int, accepted: bool | None, rounds=None) -> dict:
    check = {} if accepted is None else {"untuned_s": 1e-3, "tuned_s": 1e-3 / ratio, "accepted": accepted}
    return {
        "model": model, "tir_kernels": 3, "tuned_non_default": non_default, "model_check": check,
        "measurements": 30, "failed": 0, "eager_ms": 1.0, "untuned_ms": ratio, "tuned_ms": 1.0,
        "untuned_over_tuned": ratio, "untuned_over_tuned_rounds": rounds or [], "tune_s": 10.0,
        "cold_compile_s": 10.0, "warm_compile_s": 1.0,
    }


ROWS = [
    row("kept", 1.10, 2, True, [1.05, 1.10, 1.20]),
    row("rejected", 1.198, 0, False, [0.9, 1.2, 1.5]),  # the encoder's case: same configs
    row("defaults", 0.97, 0, None, [0.95, 1.0]),  # every kernel's defaults won: no check ran
    row("kept2", 1.21, 1, True, [1.0, 1.21, 1.3]),
]


def test_only_models_with_different_configs_count():
    assert [tuned_differs(r) for r in ROWS] == [True, False, False, True]
    summary = tuned_geomean(ROWS)
    assert summary["geomean_models"] == ["kept", "kept2"]
    assert summary["geomean_untuned_over_tuned"] == pytest.approx(math.sqrt(1.10 * 1.21))
    lo, hi = summary["geomean_round_range"]
    assert lo == pytest.approx(math.sqrt(1.05 * 1.0)) and hi == pytest.approx(math.sqrt(1.20 * 1.3))


def test_the_table_marks_same_config_rows_and_shows_spreads():
    metrics = {"kernels": 0, "spearman": math.nan, "spearman_defined": 0, "top1_recall": math.nan,
               "top5_recall": math.nan}
    split = {"split": "-", "learned": metrics, "roofline": metrics, "pooled_roofline_spearman": math.nan,
             "withheld_lookalikes": 0}
    result = {"trials_per_kernel": 4, "load_avg": [3.0], "models": ROWS, "geomean_cold_over_warm_compile": 10.0,
              "cost_model": {"samples": 0, "kernels": 0, "by_kernel": split, "by_model": split},
              **tuned_geomean(ROWS)}
    text = render(result)
    assert "a loaded machine" in text.splitlines()[0]
    assert "| 1.198 (0.90-1.50), same configs |" in text
    assert "| 1.100 (1.05-1.20) |" in text
    assert "over the 2 models whose tuned configs differ from the defaults (kept, kept2): 1.154" in text
    assert "Not counted: rejected, defaults" in text


def test_the_committed_table_does_not_count_a_rejected_model():
    result = json.loads((ROOT / "benchmarks" / "results" / "tuning.json").read_text())
    counted = set(result["geomean_models"])
    for r in result["models"]:
        assert (r["model"] in counted) == tuned_differs(r), r["model"]
    assert result["geomean_untuned_over_tuned"] == pytest.approx(tuned_geomean(result["models"])["geomean_untuned_over_tuned"])


def test_render_measures_nothing_and_rewrites_the_summary(tmp_path):
    source = tmp_path / "old.json"
    old = json.loads((ROOT / "benchmarks" / "results" / "tuning.json").read_text())
    old["geomean_untuned_over_tuned"] = 9.9  # a stale summary from an older rule
    source.write_text(json.dumps(old))
    assert main(["--render", str(source), "--out", str(tmp_path / "out")]) == 0
    new = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert new["geomean_untuned_over_tuned"] != 9.9
    assert "nothing was re-measured" in (tmp_path / "out" / "tuning.md").read_text()
