"""Ahead-of-time compile of generated kernels for sm_80 without a GPU (backends/triton/aot.py):
every kernel family must become TTIR, TTGIR and PTX, which proves it is valid GPU code."""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, compile_triton

from backends.triton.aot import CudaTarget, compile_module
from ir.ops.attention import AttentionOp
from ir.ops.contraction import LinearOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.normalization import LayerNormOp


def _one_of_each(b):
    x, q, k, v, q1 = b.args
    h = b.op(LinearOp, x, b.param("w", torch.randn(48, 40)), b.param("b", torch.randn(48)), group=0)
    h = b.op(UNARY_OPS["gelu"], h, group=0)
    n = b.op(
        LayerNormOp,
        h,
        b.param("lw", torch.randn(48)),
        b.param("lb", torch.randn(48)),
        eps=1e-5,
        ndims=1,
        group=1,
    )
    r = b.op(BINARY_OPS["add"], n, b.op(UNARY_OPS["sigmoid"], h, group=2), group=2)
    prefill = b.op(AttentionOp, q, k, v, causal=True, group=3)
    decode = b.op(AttentionOp, q1, k, v, causal=False, group=4)
    return [r, prefill, decode]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    inputs = [
        torch.randn(2, 9, 40),
        torch.randn(1, 2, 33, 64),
        torch.randn(1, 2, 40, 64),
        torch.randn(1, 2, 40, 64),
        torch.randn(1, 2, 1, 64),
    ]
    out = tmp_path_factory.mktemp("aot")
    # tf32 lets the matmul use tensor cores, so the PTX shows mma instructions.
    overrides = {"matmul": {"input_precision": "tf32"}, "attention": {"NUM_SPLITS": 4}}
    kernel = compile_triton(build(inputs, _one_of_each), overrides, out_dir=out)
    return kernel, compile_module(kernel.generated, out / "kernels.py", CudaTarget(80))


def test_every_kernel_family_compiles_to_ptx_for_sm80(compiled):
    kernel, result = compiled
    families = {k.family for k in kernel.generated.kernels}
    assert families == {"matmul", "reduction", "pointwise", "attention", "attention-merge"}
    assert set(result) == {k.name for k in kernel.generated.kernels}
    for name, stages in result.items():
        assert set(stages) == {"ttir", "ttgir", "ptx"}, name
        assert ".target sm_80" in stages["ptx"], name
        assert f".entry {name}(" in stages["ptx"], name


def test_what_the_kernels_become(compiled):
    _, result = compiled
    assert "tt.dot" in result["g0_matmul"]["ttir"]
    assert "mma.sync" in result["g0_matmul"]["ptx"]  # tf32 tensor cores
    assert "tt.dot" in result["g3_attention"]["ttir"]  # both products of the flash kernel
    assert "tt.reduce" in result["g1_reduction"]["ttir"]
    assert (
        "ld.global" in result["g2_pointwise"]["ptx"] and "@%p" in result["g2_pointwise"]["ptx"]
    )  # masked


def test_extra_option_writes_ptx_next_to_the_module(tmp_path):
    x = torch.randn(3, 5)
    program = build([x], lambda b: [b.op(UNARY_OPS["exp"], b.args[0], group=0)])
    kernel = compile_triton(program, out_dir=tmp_path, extra={"triton-aot": "90"})
    ptx = kernel.artifacts["g0_pointwise.ptx"].read_text()
    assert ".target sm_90" in ptx
