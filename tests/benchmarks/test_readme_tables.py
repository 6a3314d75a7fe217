"""`benchmarks.readme_tables`: README blocks are replaced by result files, and the README
in the repository is in step with the results it names."""

from __future__ import annotations

from pathlib import Path

from benchmarks.readme_tables import fill, main

ROOT = Path(__file__).resolve().parents[2]


def test_a_block_is_replaced_by_its_file_and_the_rest_is_kept(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("| x |\n|---|\n| 1 |\n")
    text = "intro\n<!-- results: a.md -->\nold table\n<!-- /results -->\nend\n"
    out, missing = fill(text, tmp_path)
    assert missing == []
    assert out == "intro\n<!-- results: a.md -->\n| x |\n|---|\n| 1 |\n<!-- /results -->\nend\n"
    assert fill(out, tmp_path)[0] == out  # idempotent


def test_a_missing_results_file_is_named_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results: nope.md -->\nkeep\n<!-- /results -->\n")
    assert main(["--readme", str(readme), "--results", str(tmp_path)]) == 2
    assert "nope.md" in capsys.readouterr().err
    assert "keep" in readme.read_text()


def test_the_readme_shows_the_current_results() -> None:
    text = (ROOT / "README.md").read_text()
    filled, missing = fill(text, ROOT / "benchmarks" / "results")
    assert missing == [] and "<!-- results:" in text
    assert filled == text, "run `python -m benchmarks.readme_tables` after a benchmark"
