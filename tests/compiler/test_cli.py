"""Tests for the `kiln` command line (compiler/cli.py, compiler/commands/), run as a user runs it.

Each test starts `python -m compiler.cli` in a subprocess with XDG_CACHE_HOME pointed at a
temporary folder: the artifact cache lives under platformdirs' user cache dir, so the tests
neither read nor fill the user's cache. The contract checked: user errors are one line
`error: ...` on stderr with exit code 2 and no traceback; a failed --check exits 1.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backends import TARGETS
from compiler.commands.compile_cmd import compare
from ir import parse_module, print_module

REPO = Path(__file__).resolve().parents[2]
ZOO = "examples/zoo.py"
TEST_MODELS = str(Path(__file__).with_name("models_for_tests.py").relative_to(REPO))
REPORT_KEYS = {
    "model", "target", "num_ops", "num_kernels", "compile_s", "eager_ms", "kiln_ms",
    "max_abs_err", "fallback_ops", "passes",
}

SMALL_IR = """\
builtin.module {
  func.func @forward(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %zero = "kiln.constant"() <{value = dense<0.0> : tensor<f32>}> : () -> tensor<f32>
    %a = "kiln.add"(%x, %zero) : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
    %r1 = "kiln.relu"(%a) : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r2 = "kiln.relu"(%a) : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %dead = "kiln.exp"(%x) : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %s = "kiln.add"(%r1, %r2) : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %s : tensor<2x3xf32>
  }
}
"""

# x + 0 canonicalized away, the two relus merged by cse, the dead exp removed by dce.
SMALL_IR_OPTIMIZED = """\
builtin.module {
  func.func @forward(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %r1 = "kiln.relu"(%x) : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %s = "kiln.add"(%r1, %r1) : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %s : tensor<2x3xf32>
  }
}
"""

BAD_FACTORIES = '''\
import torch

def returns_an_int():
    return 42

def returns_a_bare_module():
    return torch.nn.Linear(2, 2)

def raises():
    raise RuntimeError("no weights here")
'''

# relu lowered as sigmoid: a miscompile, so `--check` must fail. The patch is made inside the
# factory, which only the CLI subprocess calls.
MISCOMPILED_FACTORY = '''\
import torch
from compiler.capture.table import TABLE

def relu_miscompiled():
    aten = torch.ops.aten
    TABLE[aten.relu.default] = TABLE[aten.sigmoid.default]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    return model, (torch.randn(4, 8),)
'''


@pytest.fixture
def cache_home(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def kiln(*args: str, cache_home: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        cwd=REPO, env=env, input=stdin, capture_output=True, text=True, check=False, timeout=300,
    )


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, nothing on stdout, one `error:` line on stderr holding every fragment."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# ---- kiln compile -----------------------------------------------------------------------


def test_compile_check_json_prints_one_report(cache_home: Path) -> None:
    done = kiln("compile", f"{ZOO}:mlp", "--target", "tvm", "--check", "--json",
                cache_home=cache_home)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.strip().splitlines()
    report = json.loads(line)
    assert REPORT_KEYS <= set(report)
    assert report["model"] == "mlp"
    assert report["target"] == "tvm"
    assert report["check"] == "pass"
    assert report["max_abs_err"] <= 1e-4
    assert report["fallback_ops"] == []
    assert report["num_kernels"] >= 1
    assert report["eager_ms"] > 0 and report["kiln_ms"] > 0
    assert {p["name"] for p in report["passes"]} >= {"cse", "dce"}
    # Imports are startup, not compile; the pools and each linear's path are reported.
    assert report["startup_s"] > 0
    # mlp has no library call left: its kernels own both cores, torch is held at one thread.
    assert report["pool_threads"] == {"tvm": 2, "torch": 1}
    assert report["thread_plan"].startswith("parallel TIR")
    assert len(report["dense_paths"]) == 4  # mlp's four linears
    assert all(path.startswith(("packed", "library")) for path in report["dense_paths"].values())


def test_compile_out_writes_ir_artifact_and_per_pass_ir(tmp_path: Path, cache_home: Path) -> None:
    out = tmp_path / "out"
    done = kiln("compile", f"{ZOO}:mlp", "--target", "tvm", "--out", str(out), "--dump-ir",
                "--json",
                cache_home=cache_home)
    assert done.returncode == 0, done.stderr
    for name in ("captured.mlir", "optimized.mlir", "kernel.so", "report.json"):
        assert (out / name).is_file(), name
    for name in ("captured.mlir", "optimized.mlir"):
        print_module(parse_module((out / name).read_text()))  # both are valid kiln IR
    per_pass = sorted(p.name for p in (out / "passes").iterdir())
    pipeline = re.sub(r"\{[^}]*\}", "", json.loads(done.stdout)["pipeline"]).split(",")
    assert per_pass == [f"0.{i:02d}.{name}.mlir" for i, name in enumerate(pipeline)]


def test_second_compile_hits_the_cache(cache_home: Path) -> None:
    first = kiln("compile", f"{ZOO}:mlp", "--target", "tvm", "--json", cache_home=cache_home)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["cache_hit"] is False
    second = kiln("compile", f"{ZOO}:mlp", "--target", "tvm", "--json", cache_home=cache_home)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["cache_hit"] is True
    assert len(list((cache_home / "kiln" / "artifacts").glob("*.so"))) == 1


def test_compile_reports_the_eager_fallback(cache_home: Path) -> None:
    done = kiln("compile", f"{TEST_MODELS}:cumsum_between_linears", "--target", "eager", "--check",
                "--json", "--no-cache", cache_home=cache_home)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fallback_ops"] == [{"op": "aten.cumsum", "count": 1}]
    assert report["num_partitions"] == 2
    assert not (cache_home / "kiln").exists()  # --no-cache


def test_compile_strict_fails_naming_the_op(cache_home: Path) -> None:
    done = kiln("compile", f"{TEST_MODELS}:cumsum_between_linears", "--target", "eager", "--strict",
                cache_home=cache_home)
    assert_user_error(done, "aten.cumsum", "node cumsum")


def test_check_mismatch_exits_1(tmp_path: Path, cache_home: Path) -> None:
    (tmp_path / "miscompiled.py").write_text(MISCOMPILED_FACTORY)
    done = kiln("compile", f"{tmp_path / 'miscompiled.py'}:relu_miscompiled", "--target", "eager",
                "--check", "--json", cache_home=cache_home)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["check"] == "FAIL"
    assert "Traceback" not in done.stderr
    assert "error: output differs from eager PyTorch" in done.stderr


@pytest.mark.parametrize(
    ("model_arg", "fragments"),
    [
        ("no/such/file.py:mlp", ["model file 'no/such/file.py' does not exist"]),
        (f"{ZOO}:resnet1000", ["has no factory 'resnet1000'", "mlp"]),
        (ZOO, ["MODEL must be path/to/file.py:factory"]),
        ("BAD:returns_an_int", ["returns_an_int() must return (nn.Module, example_inputs)",
                                "got int"]),
        ("BAD:returns_a_bare_module", ["must return (nn.Module, example_inputs)", "got Linear"]),
        ("BAD:raises", ["factory raises() raised RuntimeError: no weights here"]),
    ],
    ids=[
        "missing-file", "missing-factory", "no-factory-name", "returns-int", "returns-module",
        "raises",
    ],
)
def test_compile_bad_model_is_one_line_error(
    model_arg: str, fragments: list[str], tmp_path: Path, cache_home: Path
) -> None:
    bad = tmp_path / "bad_factories.py"
    bad.write_text(BAD_FACTORIES)
    model_arg = model_arg.replace("BAD", str(bad))
    done = kiln("compile", model_arg, "--target", "eager", cache_home=cache_home)
    assert_user_error(done, *fragments)


def test_compile_unknown_target_lists_known_ones(cache_home: Path) -> None:
    done = kiln("compile", f"{ZOO}:mlp", "--target", "fpga", cache_home=cache_home)
    assert_user_error(done, "unknown target 'fpga'", f"known targets: {', '.join(sorted(TARGETS))}")


def test_compile_unknown_pass_lists_known_ones(cache_home: Path) -> None:
    done = kiln("compile", f"{ZOO}:mlp", "--pipeline", "cse,fuse-everything", cache_home=cache_home)
    assert_user_error(done, "unknown pass 'fuse-everything'", "known passes:", "cse", "dce")


# ---- kiln opt ---------------------------------------------------------------------------


def test_opt_prints_the_optimized_ir(tmp_path: Path, cache_home: Path) -> None:
    source = tmp_path / "small.mlir"
    source.write_text(SMALL_IR)
    done = kiln("opt", str(source), "-p", "kiln-canonicalize,cse,dce", cache_home=cache_home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == print_module(parse_module(SMALL_IR_OPTIMIZED)) + "\n"


def test_opt_reads_stdin_and_writes_output_file(tmp_path: Path, cache_home: Path) -> None:
    result = tmp_path / "result.mlir"
    done = kiln("opt", "-", "-p", "dce", "-o", str(result), stdin=SMALL_IR, cache_home=cache_home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "kiln.exp" not in result.read_text()
    assert result.read_text().count("kiln.relu") == 2  # dce alone merges nothing


def test_opt_malformed_ir_names_line_and_column(tmp_path: Path, cache_home: Path) -> None:
    source = tmp_path / "bad.mlir"
    r1_type = "(tensor<2x3xf32>) -> tensor<2x3xf32>\n    %r2"
    source.write_text(SMALL_IR.replace(r1_type, r1_type.replace(")", "", 1)))  # line 5 loses a ")"
    done = kiln("opt", str(source), "-p", "cse", cache_home=cache_home)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    # One line: `error: FILE:LINE:COL: reason`.
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"error: {re.escape(str(source))}:5:\d+: .*'\)' expected.*", lines[0])


def test_opt_unknown_pass_lists_known_ones(tmp_path: Path, cache_home: Path) -> None:
    source = tmp_path / "small.mlir"
    source.write_text(SMALL_IR)
    done = kiln("opt", str(source), "-p", "cse,nope", cache_home=cache_home)
    assert_user_error(done, "unknown pass 'nope'", "known passes:", "kiln-canonicalize")


def test_opt_missing_file(tmp_path: Path, cache_home: Path) -> None:
    done = kiln("opt", str(tmp_path / "missing.mlir"), cache_home=cache_home)
    assert_user_error(done, "missing.mlir", "does not exist")


# ---- version and help -------------------------------------------------------------------


def test_version_and_help_through_the_installed_script() -> None:
    script = Path(sys.executable).with_name("kiln")
    run = {"capture_output": True, "text": True, "timeout": 120}
    version = subprocess.run([script, "--version"], check=False, **run)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("kiln ")
    usage = subprocess.run([script, "--help"], check=False, **run)
    assert usage.returncode == 0, usage.stderr
    for command in ("compile", "opt", "bench"):
        assert command in usage.stdout


# ---- compare (the --check verdict) ------------------------------------------------------


def test_compare_equal_outputs_pass_with_zero_error() -> None:
    x = torch.randn(3, 4)
    assert compare((x, {"y": x + 1}), (x.clone(), {"y": x + 1}), 1e-4, 1e-4) == (0.0, True)


def test_compare_reports_max_error_and_respects_tolerance() -> None:
    expected = torch.zeros(4)
    actual = torch.tensor([0.0, 1e-5, -3e-3, 0.0])
    err, ok = compare(actual, expected, 1e-4, 1e-4)
    assert err == pytest.approx(3e-3) and not ok
    assert compare(actual, expected, 1e-2, 0.0) == (pytest.approx(3e-3), True)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 2)),  # shape
        (torch.zeros(3, dtype=torch.float64), torch.zeros(3)),  # dtype
        ((torch.zeros(3),), (torch.zeros(3), torch.zeros(3))),  # number of outputs
    ],
    ids=["shape", "dtype", "count"],
)
def test_compare_structural_mismatch_is_infinite_error(actual, expected) -> None:
    assert compare(actual, expected, 1e-4, 1e-4) == (float("inf"), False)


def test_compare_nan_is_a_mismatch() -> None:
    actual = (torch.tensor([float("nan")]), torch.tensor([1.0]))
    err, ok = compare(actual, (torch.tensor([0.0]), torch.tensor([0.0])), 1e-4, 1e-4)
    assert math.isnan(err) and not ok
