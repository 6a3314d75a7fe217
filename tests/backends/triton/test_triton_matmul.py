"""Matmul kernels (backends/triton/matmul.py) against the reference interpreter."""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, check, source

from ir.ops.contraction import LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.movement import PermuteOp, ReshapeOp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# 16-wide tiles: M, N and K below are ragged multiples, and there are several tiles per dim.
SMALL = {"matmul": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}}


@pytest.mark.parametrize("overrides", [None, SMALL], ids=["default", "small-tiles"])
def test_linear_bias_gelu_residual_epilogue_is_one_kernel(overrides):
    x, w, bias, res = (
        torch.randn(3, 13, 40),
        torch.randn(37, 40),
        torch.randn(37),
        torch.randn(3, 13, 37),
    )

    def body(b):
        y = b.op(LinearOp, b.args[0], b.param("w", w), b.param("b", bias), group=0)
        g = b.op(UNARY_OPS["gelu"], y, group=0, approximate="none")
        return [b.op(BINARY_OPS["add"], g, b.args[1], group=0)]

    kernel = check(build([x, res], body), [x, res], overrides)
    text = source(kernel)
    assert text.count("@triton.jit") == 1
    assert "tl.dot(" in text and 'input_precision="ieee"' in text
    assert "(rm[:, None] < 39)" in text and "(rk[None, :] < 40)" in text  # ragged M and K masks


def test_batched_matmul_with_broadcast_batch_dims():
    a, b_ = torch.randn(2, 3, 17, 20), torch.randn(3, 20, 9)
    c = torch.randn(1, 20, 9)

    def body(b):
        return [
            b.op(MatmulOp, b.args[0], b.args[1], group=0),
            b.op(MatmulOp, b.args[0], b.args[2], group=1),
        ]

    check(build([a, b_, c], body), [a, b_, c], SMALL)


def test_elementwise_prologue_and_transposed_operand_inside_the_k_loop():
    """silu(x) @ permute(y): both computed while loading tiles, no extra kernel."""
    x, y = torch.randn(2, 21, 18), torch.randn(2, 23, 18)

    def body(b):
        a = b.op(UNARY_OPS["silu"], b.args[0], group=0)
        bt = b.op(PermuteOp, b.args[1], dims=(0, 2, 1), group=0)
        return [b.op(MatmulOp, a, bt, group=0)]

    kernel = check(build([x, y], body), [x, y], SMALL)
    text = source(kernel)
    assert text.count("@triton.jit") == 1
    assert "tl.where(" in text  # the computed operand is zeroed outside its mask before the dot


def test_head_split_epilogue_stores_through_reshape_and_permute():
    """q = linear(x).reshape(b, s, h, d).permute(0, 2, 1, 3): one kernel storing each tile
    element at its permuted address."""
    x, w = torch.randn(2, 11, 32), torch.randn(32, 32)

    def body(b):
        y = b.op(LinearOp, b.args[0], b.param("w", w), group=0)
        r = b.op(ReshapeOp, y, shape=(2, 11, 4, 8), group=0)
        return [b.op(PermuteOp, r, dims=(0, 2, 1, 3), group=0)]

    kernel = check(build([x], body), [x], SMALL)
    assert source(kernel).count("@triton.jit") == 1 and not kernel.notes


def test_matrix_vector_and_single_row():
    x, w, bias = torch.randn(1, 50), torch.randn(70, 50), torch.randn(70)
    v = torch.randn(50)

    def body(b):
        return [
            b.op(LinearOp, b.args[0], b.param("w", w), b.param("b", bias), group=0),
            b.op(LinearOp, b.args[1], b.param("w2", w), group=1),
        ]

    check(build([x, v], body), [x, v], SMALL)


def test_two_contractions_in_one_group_are_split():
    x, w = torch.randn(4, 8), torch.randn(8, 8)

    def body(b):
        y = b.op(LinearOp, b.args[0], b.param("w", w), group=0)
        return [b.op(LinearOp, y, b.param("w2", w), group=0)]

    kernel = check(build([x], body), [x])
    assert source(kernel).count("@triton.jit") == 2 and "no template" in kernel.notes[0]


def test_tf32_knob_changes_only_the_dot_precision():
    x, w = torch.randn(16, 16), torch.randn(16, 16)

    def body(b):
        return [b.op(LinearOp, b.args[0], b.param("w", w), group=0)]

    kernel = check(build([x], body), [x], {"matmul": {"input_precision": "tf32"}}, tol=1e-2)
    assert 'input_precision="tf32"' in source(kernel)
