"""C simulation of the generated project against the bit-accurate emulation (backends/hls).

The C++ (compiled with g++ against hls4ml's ap_types) and `emulate.py` must agree bit for
bit on the zoo's mlp and cnn, the small encoder layer and a mix of every other layer kind,
on the example inputs and on inputs large enough to saturate and wrap. Separately, the
emulation at a wide precision must match fp32 eager closely: that checks the lowering's
semantics (layouts, folds, tables), which bit-exactness alone cannot.
"""

from __future__ import annotations

import subprocess

import pytest
import torch
from hls_harness import MODELS, NEEDS_TOOLS, UNIFORM_PIPELINE, built, program_of, rel_rms

from backends.hls import emulate
from backends.hls.config import HLSConfig
from backends.hls.lower import lower
from ir.quant.fixed import FixedPoint

pytestmark = NEEDS_TOOLS


def _outputs(model, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*inputs)
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_csim_matches_the_emulation_bit_for_bit(name: str) -> None:
    _, inputs, _, kernel = built(name)
    g = torch.Generator().manual_seed(1)
    for scale in (1.0, 4.0, 40.0):  # 40: past fixed<16,6>'s range, so conversions saturate and wrap
        xs = [x if scale == 1.0 else torch.randn(x.shape, generator=g) * scale for x in inputs]
        got = kernel.library.run(xs)
        want = kernel.emulate(*xs)
        for y, e in zip(got, want):
            assert torch.equal(y, e.reshape(y.shape)), f"{name} at scale {scale}: max |diff| {(y - e.reshape(y.shape)).abs().max()}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_kernel_output_is_close_to_fp32_within_the_quantization_error(name: str) -> None:
    model, inputs, _, kernel = built(name)
    for got, want in zip(kernel(*inputs), _outputs(model, inputs)):
        assert got.shape == want.shape and got.dtype == torch.float32
        assert rel_rms(got, want) < 0.3  # uniform fixed<16,6>: the mlp's logits lose ~20%


WIDE = "fixed<24,8,AP_RND_CONV,AP_SAT>"


@pytest.mark.parametrize("name,precision,tol", [
    ("mlp", WIDE, 1e-2), ("cnn", WIDE, 1e-3), ("op_mix", WIDE, 2e-2),
    ("encoder_layer", "fixed<20,8,AP_RND_CONV,AP_SAT>", 2e-3),  # wider scores pass int64
])
def test_emulation_at_wide_precision_matches_fp32(name: str, precision: str, tol: float) -> None:
    model, inputs, program = program_of(name)
    graph = lower(program, HLSConfig(precision=FixedPoint.parse(precision)))
    for got, want in zip(emulate.run(graph, inputs), _outputs(model, inputs)):
        assert rel_rms(got, want) < tol  # what is left: the gelu, exp, reciprocal and rsqrt tables


def test_a_second_build_loads_the_cached_library() -> None:
    from hls_harness import CACHE

    from backends import BuildOptions, get_backend

    _, _, _, first = built("encoder_layer")
    _, _, program = program_of("encoder_layer")
    again = get_backend("hls").build(program, BuildOptions(cache_dir=CACHE))
    assert again.cache_hit and again.library.path == first.library.path


def test_every_build_reports_the_testbench_bit_exact() -> None:
    _, _, _, kernel = built("cnn", UNIFORM_PIPELINE)
    assert kernel.report["tb_bit_exact"] == 1
    assert "folded into kiln.conv2d" in kernel.report["notes"]  # batch norm folded, as hls4ml does


def test_the_generated_testbench_builds_with_gpp_and_passes() -> None:
    _, _, _, kernel = built("encoder_layer")
    root = kernel.artifacts["hls_project"]
    done = subprocess.run(["sh", str(root / "build_csim.sh")], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 mismatching outputs" in done.stdout


def test_verify_exact_checks_every_call() -> None:
    from hls_harness import CACHE

    from backends import BuildOptions, get_backend

    _, inputs, program = program_of("mlp")
    kernel = get_backend("hls").build(program, BuildOptions(cache_dir=CACHE, extra={"verify": "exact"}))
    kernel(*inputs)
    kernel(*inputs)
    assert kernel.verified_calls == 3  # the build's testbench check, then both calls


def test_the_default_calibrated_types_beat_hls4mls_uniform_default_on_mlp() -> None:
    model, inputs, _, calibrated = built("mlp")
    _, _, _, uniform = built("mlp", UNIFORM_PIPELINE)
    want = _outputs(model, inputs)[0]
    err_calibrated = rel_rms(calibrated(*inputs)[0], want)
    err_uniform = rel_rms(uniform(*inputs)[0], want)
    assert err_calibrated < 0.05 and err_calibrated < err_uniform / 5, (err_calibrated, err_uniform)
