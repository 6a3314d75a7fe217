"""Regression tests for the `kiln` mistakes a new user makes (issue 9, items 4-7 and the
small CLI items), run through a subprocess as in test_cli.py.

Each test reproduces a failure that was seen: `kiln opt` hanging for minutes on a Python
file, HLS printing a 46-line traceback for an op it cannot build, rich eating `[hls]` out of
an error and crashing on `[/x]` in a path, and `--help` showing `<bool>` beside flags.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmarks.timing import TimingStats
from compiler.commands.compile_cmd import print_report
from compiler.commands.latency import busy_warning, latency_rows
from ir import IRSyntaxError, parse_module
from ir.string_literals import find_bad_string_literal
from tests.compiler.test_cli import REPO, TEST_MODELS, ZOO, assert_user_error, kiln

# 60 characters after an unclosed quote: xDSL's string regex would backtrack ~2^60 steps.
UNCLOSED = 'builtin.module {\n  %x = "kiln.constant"() <{value = "' + "a b " * 15 + '}> : () -> f32\n}\n'


@pytest.fixture
def cache_home(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---- 4. kiln opt on malformed input: one line, at once ---------------------------------


def test_unclosed_string_is_found_in_linear_time() -> None:
    start = time.perf_counter()
    with pytest.raises(IRSyntaxError, match=r"^in\.mlir:2:36: unterminated string literal"):
        parse_module(UNCLOSED, "in.mlir")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('"abc', (1, 1)),
        ('x\n  "ok" "bad\\q"', (2, 8)),  # an escape the lexer does not know
        ('"a\\', (1, 1)),
        ('"""docstring\n', (1, 3)),  # `""` closes; the third quote opens a string
    ],
)
def test_bad_string_literals_are_located(text: str, where: tuple[int, int]) -> None:
    found = find_bad_string_literal(text)
    assert found is not None and found[:2] == where


@pytest.mark.parametrize("text", ['"a\\n\\t\\"\\\\\\0A" "" "x"', '// a "comment\n"s"', "no strings"])
def test_good_string_literals_pass(text: str) -> None:
    assert find_bad_string_literal(text) is None


def test_opt_unclosed_string_answers_at_once(tmp_path: Path, cache_home: Path) -> None:
    bad = tmp_path / "bad.mlir"
    bad.write_text(UNCLOSED)
    done = kiln("opt", str(bad), cache_home=cache_home)  # the helper's timeout catches a hang
    assert_user_error(done, "bad.mlir:2:36", "unterminated string literal")


def test_opt_python_source_is_refused(tmp_path: Path, cache_home: Path) -> None:
    start = time.perf_counter()
    done = kiln("opt", "compiler/cli.py", cache_home=cache_home)
    assert_user_error(done, "compiler/cli.py", "Python source, not kiln IR", "kiln compile")
    assert time.perf_counter() - start < 30  # it hung for 14 CPU-minutes


def test_opt_python_source_renamed_still_answers(tmp_path: Path, cache_home: Path) -> None:
    renamed = tmp_path / "cli.mlir"
    renamed.write_text((REPO / "compiler" / "cli.py").read_text())
    done = kiln("opt", str(renamed), cache_home=cache_home)
    assert_user_error(done, "cli.mlir:1:3", "unterminated string literal")


@pytest.mark.parametrize(("path", "kind"), [("/dev/null", "device or special file"), ("/tmp", "a directory")])
def test_opt_not_a_regular_file(path: str, kind: str, cache_home: Path) -> None:
    assert_user_error(kiln("opt", path, cache_home=cache_home), path, "not a regular file", kind)


def test_opt_binary_file(tmp_path: Path, cache_home: Path) -> None:
    blob = tmp_path / "blob.mlir"
    blob.write_bytes(b"\x00\xff\xfe binary")
    assert_user_error(kiln("opt", str(blob), cache_home=cache_home), "blob.mlir", "not UTF-8")


# ---- 5. HLS names the op it cannot build and says it has no eager fallback ---------------


def test_hls_unsupported_op_is_one_line(cache_home: Path) -> None:
    done = kiln("compile", f"{TEST_MODELS}:cumsum_between_linears", "--target", "hls", cache_home=cache_home)
    assert_user_error(done, "unsupported op aten.cumsum", "(node cumsum)", "target 'hls' cannot fall back to eager")


# ---- 6. user text is printed verbatim ----------------------------------------------------


def test_error_text_is_not_rich_markup(tmp_path: Path, cache_home: Path) -> None:
    folder = tmp_path / "a[/x]" / "[bold]kiln[hls]"
    folder.mkdir(parents=True)
    done = kiln("opt", str(folder / "missing.mlir"), cache_home=cache_home)
    assert_user_error(done, f"{folder}/missing.mlir", "does not exist")
    done = kiln("compile", f"{folder}/m.py:factory", cache_home=cache_home)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "a[/x]/[bold]kiln[hls]/m.py" in done.stderr


def test_fail_prints_pip_extras_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from compiler.cli import fail

    with pytest.raises(typer.Exit):
        fail("install it with pip install 'kiln[hls]' [/x]")
    assert "pip install 'kiln[hls]' [/x]" in capsys.readouterr().err


# ---- 7. latency: spread, busy-machine warning, no speedup for emulations ---------------------


def _stats(median: float, p10: float, p90: float, rounds: tuple[float, ...] = ()) -> TimingStats:
    return TimingStats(median, p10, p90, p10, 100, rounds)


def test_busy_or_noisy_timings_are_flagged() -> None:
    quiet = _stats(0.2, 0.19, 0.22)
    assert busy_warning(1.0, 2, quiet, quiet, [1.0, 1.1]) is None
    assert "load average 3.0 on 2 cores" in busy_warning(3.0, 2, quiet, quiet, [1.0, 1.1])
    noisy = _stats(0.33, 0.22, 50.2)  # the 528x case: eager stalled on a busy pool
    assert "eager p10-p90 0.22-50.2 ms" in busy_warning(1.0, 2, noisy, quiet, [2.45, 534.0])


def test_emulated_targets_report_no_speedup() -> None:
    report = {"eager_ms": 0.2, "kiln_ms": 40.0, "timing_mode": "interpreter", "speedup": None}
    assert dict(latency_rows(report))["speedup"].startswith("n/a: kernels ran in Triton's CPU interpreter")
    report["timing_mode"] = "C simulation"
    assert "C simulation" in dict(latency_rows(report))["speedup"]


def test_compile_reports_spread_rounds_and_no_passes(cache_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = kiln("compile", f"{ZOO}:mlp", "--target", "eager", "--json", "--pipeline", "", cache_home=cache_home)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["timing_mode"] == "native" and report["timing_rounds"] >= 5
    assert report["eager_p10_ms"] <= report["eager_ms"] <= report["eager_p90_ms"]
    assert report["kiln_p10_ms"] <= report["kiln_ms"] <= report["kiln_p90_ms"]
    lo, hi = report["speedup_range"]
    assert lo <= hi
    # the warning is on stderr exactly when the report carries one
    assert (report["timing_warning"] is not None) == ("warning: the machine is busy" in done.stderr)
    # `--pipeline ""` ran no passes, and the table says so rather than showing an empty row
    assert report["passes"] == []
    print_report(report)
    assert "no passes" in capsys.readouterr().out


# ---- --dump-ir, empty pipeline, --help ----------------------------------------------------


def test_dump_ir_without_out_is_refused(cache_home: Path) -> None:
    done = kiln("compile", f"{ZOO}:mlp", "--dump-ir", cache_home=cache_home)
    assert_user_error(done, "--dump-ir", "--out DIR")


def test_help_shows_no_bool_metavar(cache_home: Path) -> None:
    for command in ("compile", "tune", "opt"):
        done = kiln(command, "--help", cache_home=cache_home)
        assert done.returncode == 0, done.stderr
        assert "--json" in done.stdout or "--verify-each" in done.stdout
        assert "<bool>" not in done.stdout
