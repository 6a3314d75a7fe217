"""FLOP and byte counts, checked against hand computation."""

from __future__ import annotations

import pytest
import torch
from ir_builders import one_op_module
from ir_cases import CASES

from ir.ops.attention import AttentionOp
from ir.ops.contraction import Conv2dOp, LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.movement import EmbeddingOp, PermuteOp

r = torch.randn
F32 = 4  # bytes


def test_linear_flops_are_2mnk():
    _, op = one_op_module(LinearOp, [r(4, 8), r(16, 8), r(16)])
    assert op.flops() == 2 * 4 * 16 * 8
    _, op = one_op_module(LinearOp, [r(2, 3, 8), r(5, 8), None])
    assert op.flops() == 2 * (2 * 3) * 5 * 8


def test_matmul_flops_count_broadcast_batches():
    _, op = one_op_module(MatmulOp, [r(4, 8), r(8, 5)])
    assert op.flops() == 2 * 4 * 5 * 8
    _, op = one_op_module(MatmulOp, [r(2, 1, 4, 8), r(3, 8, 5)])
    assert op.flops() == 2 * (2 * 3) * 4 * 5 * 8


@pytest.mark.parametrize(
    "x, w, stride, padding, groups, out_hw",
    [
        ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (0, 0), 1, (6, 6)),
        ((1, 3, 9, 7), (6, 3, 3, 3), (2, 2), (1, 1), 1, (5, 4)),
        ((1, 4, 8, 10), (6, 2, 3, 2), (1, 2), (2, 0), 2, (10, 5)),
    ],
    ids=["plain", "stride2-pad1", "groups2"],
)
def test_conv2d_flops(x, w, stride, padding, groups, out_hw):
    _, op = one_op_module(
        Conv2dOp,
        [r(*x), r(*w), None],
        stride=stride,
        padding=padding,
        dilation=(1, 1),
        groups=groups,
    )
    n, cout, (oh, ow) = x[0], w[0], out_hw
    macs_per_output = (x[1] // groups) * w[2] * w[3]
    assert op.flops() == 2 * n * cout * oh * ow * macs_per_output


def test_attention_flops_are_both_matmuls():
    b, h, lq, s, e, ev = 2, 3, 4, 6, 8, 5
    _, op = one_op_module(
        AttentionOp, [r(b, h, lq, e), r(b, h, s, e), r(b, h, s, ev), None], causal=False
    )
    scores = 2 * b * h * lq * s * e  # q @ k^T
    mix = 2 * b * h * lq * s * ev  # p @ v
    assert op.flops() == scores + mix


def test_elementwise_flops_scale_with_output():
    _, op = one_op_module(BINARY_OPS["add"], [r(3, 1, 5), r(4, 5)])
    assert op.flops() == 3 * 4 * 5
    _, op = one_op_module(UNARY_OPS["gelu"], [r(3, 5)])
    assert op.flops() == 15 * UNARY_OPS["gelu"].FLOPS_PER_ELEMENT


def test_linear_bytes_moved_is_inputs_weights_outputs():
    _, op = one_op_module(LinearOp, [r(4, 8), r(16, 8), r(16)])
    assert op.bytes_moved() == (4 * 8 + 16 * 8 + 16 + 4 * 16) * F32
    _, op = one_op_module(LinearOp, [r(4, 8), r(16, 8), None])
    assert op.bytes_moved() == (4 * 8 + 16 * 8 + 4 * 16) * F32
    half = torch.float16
    _, op = one_op_module(LinearOp, [r(4, 8, dtype=half), r(16, 8, dtype=half), None])
    assert op.bytes_moved() == (4 * 8 + 16 * 8 + 4 * 16) * 2


def test_embedding_reads_only_gathered_rows():
    _, op = one_op_module(EmbeddingOp, [r(1000, 4), torch.zeros(2, 3, dtype=torch.int64)])
    rows = 2 * 3 * 4 * F32
    assert op.bytes_moved() == rows + rows + 2 * 3 * 8  # read rows, write them, read int64 indices


def test_data_movement_has_no_flops():
    _, op = one_op_module(PermuteOp, [r(2, 3)], dims=(1, 0))
    assert op.flops() == 0
    assert op.bytes_moved() == 2 * 2 * 3 * F32


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_op_has_integer_costs(case):
    _, op = one_op_module(case.op, case.inputs, **case.options)
    flops, moved = op.flops(), op.bytes_moved()
    assert isinstance(flops, int) and flops >= 0
    assert isinstance(moved, int) and moved >= 0
