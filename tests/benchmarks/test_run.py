"""End-to-end tests of `benchmarks/run.py` on the smallest zoo model, with fast settings."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from benchmarks import systems
from benchmarks.run import compare_outputs, run_benchmarks


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_runner_end_to_end_on_mlp_eager(tmp_path) -> None:
    results = run_benchmarks(
        ["mlp"],
        ["eager"],
        repeats=2,
        rounds=2,
        warmup=1,
        min_round_s=0.0,
        out_dir=tmp_path,
        console=_quiet(),
        progress=False,
    )
    (row,) = results.rows
    assert row.ok and row.max_abs_err == 0.0 and row.timing.samples == 4
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["results"][0]["status"] == "ok"
    assert data["meta"]["threads"] == torch.get_num_threads()
    assert "| mlp |" in (tmp_path / "latest.md").read_text()


class BrokenSystem(systems.System):
    name = "broken"

    def prepare(self, model, inputs) -> None:
        raise RuntimeError("no lowering for\naten.gelu")


class MissingSystem(systems.System):
    name = "missing"

    def unavailable(self) -> str | None:
        return "not installed"


def test_failing_and_missing_systems_become_cells(monkeypatch) -> None:
    monkeypatch.setitem(systems.SYSTEMS, "broken", BrokenSystem)
    monkeypatch.setitem(systems.SYSTEMS, "missing", MissingSystem)
    results = run_benchmarks(
        ["mlp"],
        ["eager", "broken", "missing"],
        repeats=2,
        rounds=1,
        warmup=1,
        min_round_s=0.0,
        out_dir=None,
        console=_quiet(),
        progress=False,
    )
    assert results.row("mlp", "eager").ok
    assert results.row("mlp", "broken").status == ("error: RuntimeError: no lowering for aten.gelu")
    assert results.row("mlp", "missing").status == "not installed"


def test_compare_outputs() -> None:
    a = torch.ones(2, 3)
    assert compare_outputs(a, a.clone()) == (0.0, True)
    err, close = compare_outputs((a + 1e-2,), (a,))
    assert err == pytest.approx(1e-2) and not close
    assert compare_outputs(a[:1], a) == (float("inf"), False)
    assert compare_outputs(a * float("nan"), a) == (float("inf"), False)


def test_kiln_takes_torch_compile_where_torch_export_cannot_trace(tmp_path):
    """The real-model suite's data-dependent model fails torch.export; a user would compile it
    with torch.compile(backend="kiln"), so the benchmark does, and its notes say so."""
    from benchmarks.report import notes

    results = run_benchmarks(["data-dependent"], ["eager", "kiln"], repeats=1, rounds=1, warmup=1,
                             min_round_s=0.0, suite="real", out_dir=tmp_path, progress=False)
    kiln = next(r for r in results.rows if r.system == "kiln")
    assert kiln.status == "ok" and kiln.timing is not None, kiln.status
    assert any("through torch.compile" in n for n in notes(results))
    assert (tmp_path / "real.md").is_file() and not (tmp_path / "latest.md").exists()
