"""Row-reduction kernels (backends/triton/reduction.py) against the reference interpreter."""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, check, source

from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.movement import PermuteOp
from ir.ops.normalization import LayerNormOp, LogSoftmaxOp, RmsNormOp, SoftmaxOp
from ir.ops.reduction import ReduceOp

# Masked lanes of a block compute on padding (log(0), 0/0); numpy warns, the lanes are discarded.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# BLOCK_N=16 and ROWS=4 make every row span several ragged chunks and leave a ragged last program.
SMALL = {"reduction": {"BLOCK_N": 16, "ROWS": 4}}


@pytest.mark.parametrize("overrides", [None, SMALL], ids=["default", "small-blocks"])
def test_softmax_family_and_norms(overrides):
    x = torch.randn(3, 5, 37) * 3
    w, bias = torch.randn(37), torch.randn(37)

    def body(b):
        x = b.args[0]
        return [
            b.op(SoftmaxOp, x, dim=-1, group=0),
            b.op(LogSoftmaxOp, x, dim=2, group=1),
            b.op(LayerNormOp, x, b.param("w", w), b.param("b", bias), eps=1e-5, ndims=1, group=2),
            b.op(LayerNormOp, x, eps=1e-5, ndims=2, group=3),  # two trailing dims, no affine
            b.op(RmsNormOp, x, b.param("rw", w), eps=1e-6, ndims=1, group=4),
        ]

    kernel = check(build([x], body), [x], overrides)
    assert source(kernel).count("@triton.jit") == 5


@pytest.mark.parametrize("kind", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize(
    "dims,keepdim", [((2,), True), ((1,), False), ((0, 2), False), ((0, 1, 2), False)]
)
def test_reduce_kinds_over_any_dims(kind, dims, keepdim):
    x = torch.randn(4, 6, 21)

    def body(b):
        return [b.op(ReduceOp, b.args[0], kind=kind, dims=dims, keepdim=keepdim, group=0)]

    check(build([x], body), [x], SMALL)


def test_softmax_over_a_middle_dim():
    x = torch.randn(2, 19, 3)

    def body(b):
        return [b.op(SoftmaxOp, b.args[0], dim=1, group=0)]

    check(build([x], body), [x], SMALL)


def test_hand_written_rms_norm_with_prologue_and_epilogue_is_one_kernel():
    """Llama's RMSNorm as capture sees it: pow, mean, add eps, rsqrt, mul x, mul weight,
    with the residual add before it (an output too) in the same group."""
    x, res, w = torch.randn(2, 7, 40), torch.randn(2, 7, 40), torch.randn(40)

    def body(b):
        h = b.op(BINARY_OPS["add"], b.args[0], b.args[1], group=0)
        sq = b.op(BINARY_OPS["pow"], h, b.const(torch.tensor(2.0)), group=0)
        mean = b.op(ReduceOp, sq, kind="mean", dims=(-1,), keepdim=True, group=0)
        rstd = b.op(
            UNARY_OPS["rsqrt"],
            b.op(BINARY_OPS["add"], mean, b.const(torch.tensor(1e-6)), group=0),
            group=0,
        )
        y = b.op(
            BINARY_OPS["mul"], b.op(BINARY_OPS["mul"], h, rstd, group=0), b.param("w", w), group=0
        )
        return [h, y, rstd]  # full-size, full-size and per-row outputs

    kernel = check(build([x, res], body), [x, res], SMALL)
    text = source(kernel)
    assert text.count("@triton.jit") == 1
    assert "rows[:, None] < 14" in text and "< 40)" in text  # row and column masks (ragged)


def test_hand_written_layer_norm_needs_two_statistics_passes():
    """mean, then the mean of (x - mean)^2: a reduction reading a reduction, one kernel."""
    x = torch.randn(6, 50) + 3.0

    def body(b):
        mean = b.op(ReduceOp, b.args[0], kind="mean", dims=(1,), keepdim=True, group=0)
        centered = b.op(BINARY_OPS["sub"], b.args[0], mean, group=0)
        var = b.op(
            ReduceOp,
            b.op(BINARY_OPS["mul"], centered, centered, group=0),
            kind="mean",
            dims=(1,),
            keepdim=True,
            group=0,
        )
        rstd = b.op(
            UNARY_OPS["rsqrt"],
            b.op(BINARY_OPS["add"], var, b.const(torch.tensor(1e-5)), group=0),
            group=0,
        )
        return [b.op(BINARY_OPS["mul"], centered, rstd, group=0)]

    kernel = check(build([x], body), [x], SMALL)
    assert (
        source(kernel).count("for start in range(0, 50, BLOCK_N):") == 3
    )  # two stats passes + output


def test_softmax_with_elementwise_prologue_and_epilogue():
    x, bias = torch.randn(4, 33), torch.randn(33)

    def body(b):
        scaled = b.op(BINARY_OPS["mul"], b.args[0], b.const(torch.tensor(0.125)), group=0)
        biased = b.op(BINARY_OPS["add"], scaled, b.param("bias", bias), group=0)
        probs = b.op(SoftmaxOp, biased, dim=-1, group=0)
        return [b.op(BINARY_OPS["mul"], probs, b.const(torch.tensor(2.0)), group=0)]

    kernel = check(build([x], body), [x], SMALL)
    assert source(kernel).count("@triton.jit") == 1


def test_reduction_read_at_another_row_is_split_and_still_correct():
    """A permute after a reduce reads statistics of other rows: the template refuses, the
    group is split into single-op kernels, and the split is reported."""
    x = torch.randn(4, 6, 5)

    def body(b):
        s = b.op(ReduceOp, b.args[0], kind="sum", dims=(2,), keepdim=False, group=0)  # (4, 6)
        p = b.op(PermuteOp, s, dims=(1, 0), group=0)
        return [b.op(UNARY_OPS["exp"], p, group=0)]

    kernel = check(build([x], body), [x])
    assert kernel.notes and "split" in kernel.notes[0]
    assert source(kernel).count("@triton.jit") == 3
