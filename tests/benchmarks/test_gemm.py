"""`python -m benchmarks.gemm` on tiny problems: every system gives a number, Kiln's path
is named, and results land where --out says (never in the committed results)."""

from __future__ import annotations

import json

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


def test_gemm_int8_columns_on_a_tiny_problem(tmp_path):
    """--quick: Kiln's int8_dyn kernel, torch's and ONNX Runtime's dynamic int8 linears all
    run and pass the W8A8 correctness check; Kiln's int8 path is named."""
    code = gemm.main(["--quick", "--systems", "eager,kiln-int8,torch-int8,onnxruntime-int8", "--out", str(tmp_path)])
    assert code == 0
    (row,) = json.loads((tmp_path / "gemm.json").read_text())["table"]
    assert (row["m"], row["k"]) == (7, 64)
    for system in ("eager", "kiln-int8", "torch-int8", "onnxruntime-int8"):
        assert row["cells"][system]["gflops"] > 0, row
    assert row["cells"]["kiln-int8"]["path"].startswith("int8-dyn-")
