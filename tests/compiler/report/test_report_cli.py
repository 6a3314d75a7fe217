"""The three ways to a report: `kiln compile --report`, `kiln report DIR`, `kiln bench --report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from browser import requires_dot
from compiler.cli import app

ROOT = Path(__file__).resolve().parents[3]


def kiln(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@requires_dot
def test_compile_report_then_kiln_report_of_the_out_dir(tmp_path: Path, monkeypatch) -> None:
    from compiler.commands.progress import StageProgress

    stages: list[str] = []
    shown = StageProgress.stage
    monkeypatch.setattr(StageProgress, "stage", lambda self, name: (stages.append(name), shown(self, name)))
    out, page = tmp_path / "out", tmp_path / "mlp.html"
    done = kiln("compile", f"{ROOT}/examples/zoo.py:mlp", "-t", "eager", "-p", "fuse", "--out", str(out),
                "--report", str(page), "--json")
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert "optimized_ir" not in printed["partitions"][0]  # --json stays small
    # the stages the progress line shows on a terminal (not drawn here: no terminal)
    assert stages == ["capture", "passes", "build", "running against eager", "timing against eager",
                      "measuring each kernel", "writing the HTML report"]
    assert "optimized_ir" not in json.loads((out / "report.json").read_text())["partitions"][0]
    html = page.read_text()
    assert 'id="decision-fusion"' in html and 'id="graph-svg"' in html and "eager" in html
    # the same page again, from the directory --out wrote (report.json + optimized.mlir)
    again = kiln("report", str(out))
    assert again.exit_code == 0, again.output
    redo = (out / "report.html").read_text()
    assert redo.count('class="node"') == html.count('class="node"') == printed["num_ops"]
    assert 'id="decision-fusion"' in redo


def test_kiln_report_bad_sources_are_one_line_errors(tmp_path: Path) -> None:
    missing = kiln("report", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = kiln("report", str(tmp_path))
    assert empty.exit_code == 2 and "has no report.json" in empty.output
    other = tmp_path / "x.json"
    other.write_text('{"hello": 1}')
    wrong = kiln("report", str(other))
    assert wrong.exit_code == 2 and "neither a compile report.json nor benchmark results" in wrong.output
    (tmp_path / "notes.txt").write_text("not json")
    garbled = kiln("report", str(tmp_path / "notes.txt"))
    assert garbled.exit_code == 2 and "is not JSON" in garbled.output
    for result in (missing, empty, wrong, garbled):
        assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output


def test_bench_report_from_the_committed_results(tmp_path: Path) -> None:
    page = tmp_path / "bench.html"
    done = kiln("report", str(ROOT / "benchmarks/results/latest.json"), "-o", str(page))
    assert done.exit_code == 0, done.output
    html = page.read_text()
    data = json.loads((ROOT / "benchmarks/results/latest.json").read_text())
    assert 'id="fig-speedups"' in html
    for system in data["systems"]:
        assert system in html


@pytest.mark.slow  # a real (short) benchmark run: ~13 s on a loaded 2-core machine
def test_kiln_bench_writes_its_report(tmp_path: Path) -> None:
    page = tmp_path / "bench.html"
    done = kiln("bench", "--models", "mlp", "--systems", "eager", "--repeats", "2", "--rounds", "1",
                "--min-round-s", "0", "--no-progress", "--out", str(tmp_path), "--report", str(page))
    assert done.exit_code == 0, done.output
    assert page.exists() and "mlp" in page.read_text()


def test_the_progress_line_draws_on_a_terminal_and_is_gone_after() -> None:
    import io

    from rich.console import Console

    from compiler.commands.progress import stage_progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with stage_progress("kiln compile gpt", console, enabled=True) as progress:
        progress.stage("build")
        progress._progress.refresh()
    assert "kiln compile gpt: build" in out.getvalue()
    quiet = io.StringIO()
    with stage_progress("x", Console(file=quiet, force_terminal=False), enabled=True) as progress:
        progress.stage("build")
    assert quiet.getvalue() == ""  # not a terminal (pipes, CI logs, --json): nothing drawn
