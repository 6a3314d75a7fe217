"""`python -m benchmarks.gemm` on tiny problems: every system gives a number, Kiln's path
is named, and results land where --out says (never in the committed results)."""

from __future__ import annotations

import json

import pytest

from benchmarks import gemm


def test_gemm_benchmark_writes_gflops_and_kilns_path(tmp_path, capsys):
    code = gemm.main(["--rows", "1,9", "--sizes", "40", "--systems", "eager,kiln,numpy", "--rounds", "1",
                      "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "gemm.json").read_text())
    assert [(row["m"], row["k"]) for row in data["table"]] == [(1, 40), (9, 40)]
    for row in data["table"]:
        for system in ("eager", "kiln", "numpy"):
            assert row["cells"][system]["gflops"] > 0, row
        assert row["cells"]["kiln"]["path"].startswith(("packed", "library"))
    text = (tmp_path / "gemm.md").read_text()
    assert "| 9 | 40 |" in text and "error" not in text


def _quick_int8_row(tmp_path, systems: str) -> dict:
    code = gemm.main(["--quick", "--systems", systems, "--out", str(tmp_path)])
    assert code == 0
    (row,) = json.loads((tmp_path / "gemm.json").read_text())["table"]
    assert (row["m"], row["k"]) == (7, 64)
    return row


def test_gemm_int8_columns_on_a_tiny_problem(tmp_path):
    """--quick: Kiln's int8_dyn kernel and torch's dynamic int8 linear run and pass the W8A8
    correctness check; Kiln's int8 path is named."""
    row = _quick_int8_row(tmp_path, "eager,kiln-int8,torch-int8")
    for system in ("eager", "kiln-int8", "torch-int8"):
        assert row["cells"][system]["gflops"] > 0, row
    assert row["cells"]["kiln-int8"]["path"].startswith("int8-dyn-")


def test_gemm_onnxruntime_int8_column(tmp_path):
    """ONNX Runtime's quantize_dynamic model passes the same check (the `bench` extra)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime comes with pip install -e '.[bench]'")
    row = _quick_int8_row(tmp_path, "eager,onnxruntime-int8")
    assert row["cells"]["onnxruntime-int8"]["gflops"] > 0, row


def test_gemm_names_a_missing_onnxruntime_in_its_cell(tmp_path, monkeypatch):
    """Without ONNX Runtime the column says how to install it, and the run still succeeds."""
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    row = _quick_int8_row(tmp_path, "eager,onnxruntime")
    assert "pip install -e '.[bench]'" in row["cells"]["onnxruntime"]["error"], row
    assert "error: error" not in (tmp_path / "gemm.md").read_text()
