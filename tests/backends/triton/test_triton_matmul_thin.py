"""Matmul tiles whose operands broadcast: the kernel must compute them or the group must be
declined, never a kernel that fails (HF Qwen2-MoE crashed the interpreter with
`accumulator shape is incompatible`: its shared-expert gate is a linear with N = 1)."""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, check, source

from ir.ops.contraction import LinearOp, MatmulOp
from ir.ops.elementwise import UNARY_OPS
from ir.ops.movement import ExpandOp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("rows", [1, 7])
def test_linear_with_one_output_column_then_sigmoid(rows):
    x, w = torch.randn(rows, 24), torch.randn(1, 24)

    def body(b):
        y = b.op(LinearOp, b.args[0], b.param("w", w), group=0)
        return [b.op(UNARY_OPS["sigmoid"], y, group=0)]

    kernel = check(build([x], body), [x])
    assert "tl.broadcast_to(" in source(kernel)


def test_matmul_of_an_expanded_row():
    row, b = torch.randn(1, 24), torch.randn(24, 20)

    def body(bld):
        a = bld.op(ExpandOp, bld.args[0], group=0, shape=(9, 24))
        return [bld.op(MatmulOp, a, bld.args[1], group=0)]

    check(build([row, b], body), [row, b])
