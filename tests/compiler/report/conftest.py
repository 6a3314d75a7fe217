"""Real compiles whose reports the tests open: each compiled once per test session.

Zoo gpt on TVM (fusion, packed/library kernel paths), the zoo mlp on HLS (quantization to
fixed point, reuse factors, C simulation), a model with an eager fallback island, a
quantized model, a quantize pass whose solver times out, and a plan with fusion, memory
offsets, sharding and pipeline stages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import chromium, missing_reason  # noqa: E402

QUANT = "fold-constants,kiln-canonicalize,cse,dce,quantize{avg-bits=6}"
# every placement decision at once: fusion, memory offsets, sharding over 2 devices, 2 stages
PLANNED = "fold-constants,kiln-canonicalize,cse,dce,fuse,map-memory,shard{mesh=2},pipeline{stages=2 microbatches=2 mesh=2}"
QUANT_TIMEOUT = "fold-constants,kiln-canonicalize,cse,dce,quantize{avg-bits=6 time-limit=0.000001}"


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


def _compile(factory, path: Path, **options):
    from compiler import compile_model

    model, inputs = factory()
    return compile_model(model, inputs, report=path, use_cache=False, **options).report


@pytest.fixture(scope="session")
def gpt_report(report_dir: Path) -> tuple[dict, Path]:
    from examples import zoo

    path = report_dir / "gpt.html"
    return _compile(zoo.gpt, path, target="tvm"), path


@pytest.fixture(scope="session")
def hls_report(report_dir: Path) -> tuple[dict, Path]:
    from examples import zoo

    path = report_dir / "hls_mlp.html"
    return _compile(zoo.mlp, path, target="hls"), path


@pytest.fixture(scope="session")
def fallback_report(report_dir: Path) -> tuple[dict, Path]:
    from tests.compiler.models_for_tests import cumsum_between_linears

    path = report_dir / "fallback.html"
    return _compile(cumsum_between_linears, path, target="tvm"), path


@pytest.fixture(scope="session")
def quant_report(report_dir: Path) -> tuple[dict, Path]:
    from examples import zoo

    path = report_dir / "quant.html"
    return _compile(zoo.mlp, path, target="eager", pipeline=QUANT), path


@pytest.fixture(scope="session")
def timeout_report(report_dir: Path) -> tuple[dict, Path]:
    from examples import zoo

    path = report_dir / "timeout.html"
    return _compile(zoo.mlp, path, target="eager", pipeline=QUANT_TIMEOUT), path


@pytest.fixture(scope="session")
def planned_report(report_dir: Path) -> tuple[dict, Path]:
    from examples import zoo

    path = report_dir / "planned.html"
    return _compile(zoo.mlp, path, target="eager", pipeline=PLANNED), path


@pytest.fixture(scope="session")
def browser():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with chromium() as driver:
        yield driver
