"""Tests for `benchmarks/report.py`: speedups, geomeans and the three renderings."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from benchmarks.report import Results, Row, rich_tables, to_json_dict, to_markdown, write_results
from benchmarks.timing import TimingStats

META = {
    "command": "python -m benchmarks.run --models mlp,gpt",
    "date": "2026-11-22 03:00 UTC",
    "torch": "2.13.0+cpu",
    "threads": 2,
    "cpu": "Test CPU (2 cores)",
}


def _timed(model: str, system: str, ms: float) -> Row:
    stats = TimingStats(median_ms=ms, p10_ms=ms, p90_ms=ms, min_ms=ms, samples=10)
    return Row(model, system, "ok", prepare_s=0.5, timing=stats, max_abs_err=1e-7, matches=True)


@pytest.fixture
def results() -> Results:
    rows = [
        _timed("mlp", "eager", 2.0),
        _timed("mlp", "inductor", 1.0),
        _timed("mlp", "kiln", 0.5),
        _timed("gpt", "eager", 8.0),
        _timed("gpt", "inductor", 2.0),
        Row("gpt", "kiln", "error: ImportError: no compile_model", info={"obj": object()}),
    ]
    return Results(META, ["mlp", "gpt"], ["eager", "inductor", "kiln"], rows)


def test_speedups_and_geomeans(results: Results) -> None:
    assert results.speedup("mlp", "inductor") == pytest.approx(2.0)
    assert results.speedup("mlp", "kiln", "inductor") == pytest.approx(2.0)
    assert results.speedup("gpt", "kiln") is None
    assert results.geomean_speedup("inductor") == pytest.approx(math.sqrt(2.0 * 4.0))
    summary = results.summary()
    assert summary["kiln_vs_eager"] == pytest.approx(4.0)  # only mlp ran
    assert summary["kiln_vs_inductor"] == pytest.approx(2.0)


def test_markdown_has_header_every_model_and_errors(results: Results) -> None:
    md = to_markdown(results)
    header = md.splitlines()[0]
    for fact in (META["command"], META["date"], "torch 2.13.0+cpu", "2 threads", "Test CPU"):
        assert fact in header
    for model in ("mlp", "gpt", "geomean speedup"):
        assert f"| {model} |" in md
    assert "0.500 ms (4.00x)" in md
    assert "error: ImportError: no compile_model" in md
    assert "kiln vs inductor" in md


def test_json_is_serializable_and_complete(results: Results, tmp_path) -> None:
    data = json.loads(json.dumps(to_json_dict(results)))
    assert data["meta"]["threads"] == 2
    assert {(r["model"], r["system"]) for r in data["results"]} == {
        (m, s) for m in ("mlp", "gpt") for s in ("eager", "inductor", "kiln")
    }
    json_path, md_path = write_results(results, tmp_path / "out")
    assert json.loads(json_path.read_text())["summary"]["inductor_vs_eager"] == pytest.approx(
        math.sqrt(8.0)
    )
    assert md_path.read_text() == to_markdown(results)


def test_rich_tables_render(results: Results) -> None:
    console = Console(file=io.StringIO(), width=200)
    for table in rich_tables(results):
        console.print(table)
    text = console.file.getvalue()
    assert "mlp" in text and "gpt" in text and "4.00x" in text


def test_header_warns_when_the_machine_was_busy(results: Results) -> None:
    results.meta = {**META, "cores": 2, "load_avg_start": 0.3, "load_avg_end": 4.5}
    assert "BUSY MACHINE: load average up to 4.5 on 2 cores" in to_markdown(results)
    results.meta = {**META, "cores": 2, "load_avg_start": 0.3, "load_avg_end": 0.5}
    assert "BUSY" not in to_markdown(results)


def test_kiln_against_onnxruntime_only_where_both_ran() -> None:
    rows = [
        _timed("a", "eager", 4.0), _timed("a", "onnxruntime", 1.0), _timed("a", "kiln", 2.0),
        _timed("b", "eager", 4.0), Row("b", "onnxruntime", "error: RuntimeError: ONNX export failed"),
        _timed("b", "kiln", 1.0),
    ]
    results = Results(META, ["a", "b"], ["eager", "onnxruntime", "kiln"], rows)
    assert results.summary()["kiln_vs_onnxruntime"] == pytest.approx(0.5)  # model a only
    md = to_markdown(results)
    assert "kiln vs onnxruntime" in md and "kiln vs inductor" not in md
    assert md.count("0.50x") == 2  # a's ratio and the geomean


def test_a_table_renders_again_from_its_json(results: Results, tmp_path) -> None:
    from benchmarks.report import from_json_dict, main

    json_path, md_path = write_results(results, tmp_path)
    again = from_json_dict(json.loads(json_path.read_text()))
    assert to_markdown(again) == md_path.read_text()
    md_path.unlink()
    assert main([str(json_path)]) == 0 and md_path.read_text() == to_markdown(results)
