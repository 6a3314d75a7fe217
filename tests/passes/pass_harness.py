"""Shared helpers for pass tests: run a pipeline on IR text, FileCheck it, compare numerics.

A pass test reads like the IR it checks: input text with `// CHECK:` lines, a pipeline,
and the promise that the interpreter gives the same numbers before and after.

(Named `pass_harness.py`, not `harness.py`: test folders have no `__init__.py`, so a helper
module's name must be unique across `tests/`.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

import ir
from ir import dtypes
from ir.interpreter import run_function
from ir.ops.sources import ParamOp
from passes import run_pipeline

_RUN_LINE = re.compile(r"""^//\s*RUN:.*?\s-p\s+(?:'([^']*)'|"([^"]*)"|(\S+))""", re.MULTILINE)


def pipeline_of(text: str) -> str:
    """The pipeline named by a `// RUN: kiln opt %s -p PIPELINE | filecheck %s` line."""
    match = _RUN_LINE.search(text)
    assert match, "a FileCheck test needs a '// RUN: kiln opt %s -p PIPELINE | filecheck %s' line"
    return next(g for g in match.groups() if g is not None)


def optimize(text: str, pipeline: str, filename: str = "<test>") -> tuple[ModuleOp, ModuleOp]:
    """(module as parsed, module after the pipeline, verified after every pass)."""
    before = ir.parse_module(text, filename)
    after = before.clone()
    run_pipeline(after, pipeline, verify=True)
    return before, after


def filecheck(output: str, checks: str) -> None:
    """Fail the test with FileCheck's own report unless `output` satisfies `checks`."""
    with tempfile.NamedTemporaryFile("w", suffix=".mlir", delete=False) as f:
        f.write(checks)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "filecheck", f.name],
            input=output,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        Path(f.name).unlink()
    if proc.returncode != 0:
        pytest.fail(f"FileCheck failed:\n{proc.stderr}\n--- output ---\n{output}", pytrace=False)


def random_tensor(t, generator: torch.Generator) -> torch.Tensor:
    """A random value of tensor type `t`: normal floats, small ints (valid indices), bools."""
    shape, dtype = dtypes.shape_of(t), dtypes.dtype_of(t)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) < 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, 3, shape, generator=generator).to(dtype)


def random_params(module: ModuleOp, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        op.opt("name"): random_tensor(op.result.type, g)
        for op in module.walk()
        if isinstance(op, ParamOp)
    }


def functions(module: ModuleOp) -> dict[str, func.FuncOp]:
    return {op.sym_name.data: op for op in module.ops if isinstance(op, func.FuncOp)}


def assert_same_numerics(before: ModuleOp, after: ModuleOp, seed: int = 0) -> None:
    """Every function of `after` computes what the same function of `before` computed."""
    params = random_params(before, seed)
    after_fns = functions(after)
    for name, fn in functions(before).items():
        g = torch.Generator().manual_seed(seed)
        args = [random_tensor(a.type, g) for a in fn.body.block.args]
        expected = run_function(fn, args, params)
        got = run_function(after_fns[name], args, params)
        assert len(got) == len(expected), f"@{name}: result count changed"
        for i, (e, o) in enumerate(zip(expected, got)):
            assert o.dtype == e.dtype and o.shape == e.shape, f"@{name} result {i}: type changed"
            where = f"@{name} result {i}"
            torch.testing.assert_close(o, e, equal_nan=True, msg=lambda m, w=where: f"{w}: {m}")
