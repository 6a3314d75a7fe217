"""`kiln bench` leaves the committed results alone unless told to update them (issue 9,
item 8): a user's run used to overwrite `benchmarks/results/latest.*`, after which the
README's own test (tests/benchmarks/test_readme_tables.py) failed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import COMMITTED_RESULTS, results_dir, user_results_dir

REPO = Path(__file__).resolve().parents[2]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("latest.*"))}


def test_a_plain_bench_writes_under_the_user_cache_dir(tmp_path: Path) -> None:
    before = _digest(COMMITTED_RESULTS)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "bench", "--models", "mlp", "--systems", "eager",
         "--repeats", "2", "--rounds", "1", "--min-round-s", "0", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    written = tmp_path / "kiln" / "bench"
    assert (written / "latest.json").is_file() and (written / "latest.md").is_file()
    assert f"wrote {written / 'latest.json'}" in done.stdout  # says where
    assert "--update-results" in done.stdout
    assert _digest(COMMITTED_RESULTS) == before


def test_only_update_results_names_the_committed_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert results_dir(None, False) == user_results_dir() == tmp_path / "kiln" / "bench"
    assert results_dir(tmp_path / "mine", False) == tmp_path / "mine"
    assert results_dir(None, True) == COMMITTED_RESULTS == REPO / "benchmarks" / "results"
    with pytest.raises(ValueError, match="--out and --update-results"):
        results_dir(tmp_path, True)


def test_out_with_update_results_is_one_line_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--out", "/tmp/x", "--update-results"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --out and --update-results name two places; pass one"]


def test_error_cells_are_printed_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    """A system's error message in the table keeps its brackets (rich markup ate `[hls]`)."""
    import io

    from rich.console import Console

    from benchmarks import systems
    from benchmarks.run import run_benchmarks

    class NeedsExtra(systems.System):
        name = "needs-extra"

        def prepare(self, model, inputs) -> None:
            raise RuntimeError("install it with pip install 'kiln[hls]' [/x]")

    monkeypatch.setitem(systems.SYSTEMS, "needs-extra", NeedsExtra)
    out = io.StringIO()
    run_benchmarks(["mlp"], ["eager", "needs-extra"], repeats=1, rounds=1, warmup=1, min_round_s=0.0,
                   out_dir=None, console=Console(file=out, width=400), progress=False)
    assert "pip install 'kiln[hls]' [/x]" in out.getvalue()
