"""Runs every `filecheck/*.mlir` pass test: pipeline from its RUN line, FileCheck, numerics.

Adding a pass test is adding a `.mlir` file with a `// RUN: kiln opt %s -p PIPELINE |
filecheck %s` line and CHECK lines; each function in it is also run by the interpreter
before and after the pipeline, so a rewrite that changes results fails even where the
CHECK lines would not notice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pass_harness import assert_same_numerics, filecheck, optimize, pipeline_of

import ir

CASES = sorted((Path(__file__).parent / "filecheck").glob("*.mlir"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_filecheck_case(path: Path) -> None:
    text = path.read_text()
    before, after = optimize(text, pipeline_of(text), str(path))
    filecheck(ir.print_module(after), text)
    assert_same_numerics(before, after)


def test_cases_exist() -> None:
    assert len(CASES) >= 4, "the filecheck/ folder lost its cases"


def test_filecheck_harness_catches_a_wrong_expectation() -> None:
    text = (Path(__file__).parent / "filecheck" / "canonicalize_movement.mlir").read_text()
    _, after = optimize(text, "kiln-canonicalize")
    with pytest.raises(pytest.fail.Exception, match="FileCheck failed"):
        filecheck(ir.print_module(after), "// CHECK: kiln.no_such_op\n")
