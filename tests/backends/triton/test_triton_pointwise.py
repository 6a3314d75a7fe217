"""Pointwise kernels (backends/triton/pointwise.py, lowering.py) against the reference
interpreter, run in Triton's CPU interpreter; plus checks on the generated source."""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, check, source

from ir.ops.elementwise import BINARY_OPS, COMPARE_OPS, UNARY_OPS, CastOp, ClampOp, WhereOp
from ir.ops.movement import ConcatOp, EmbeddingOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from ir.ops.normalization import BatchNormOp

# Masked lanes of a block compute on padding (log(0), 0/0); numpy warns, the lanes are discarded.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

POSITIVE = {"log", "sqrt", "rsqrt", "reciprocal"}


def test_every_unary_op_in_one_fused_kernel():
    """All unary ops of the table, each applied to the same input, in one group (one kernel)."""
    x = torch.randn(3, 45)  # 135 elements: not a multiple of any block
    names = sorted(UNARY_OPS)

    def body(b):
        pos = b.op(UNARY_OPS["abs"], b.args[0], group=0)
        pos = b.op(BINARY_OPS["add"], pos, b.const(torch.tensor(0.5)), group=0)
        outs = []
        for name in names:
            src = pos if name in POSITIVE else b.args[0]
            if name == "logical_not":
                src = b.op(COMPARE_OPS["gt"], b.args[0], b.const(torch.tensor(0.0)), group=0)
            outs.append(b.op(UNARY_OPS[name], src, group=0))
        outs.append(b.op(UNARY_OPS["gelu"], b.args[0], group=0, approximate="tanh"))
        return outs

    kernel = check(build([x], body), [x])
    assert source(kernel).count("@triton.jit") == 1
    assert kernel.num_kernels == 1


@pytest.mark.parametrize(
    "shapes", [((4, 33), (4, 33)), ((4, 33), (33,)), ((4, 1, 5), (3, 1)), ((), (7, 3))]
)
def test_binary_and_compare_ops_broadcast(shapes):
    a, b_ = torch.randn(shapes[0]), torch.randn(shapes[1]) + 2.0

    def body(b):
        x, y = b.args
        outs = [
            b.op(op, x, y, group=0)
            for name, op in sorted(BINARY_OPS.items())
            if not name.startswith("logical")
        ]
        outs += [b.op(op, x, y, group=0) for _, op in sorted(COMPARE_OPS.items())]
        gt = b.op(COMPARE_OPS["gt"], x, y, group=0)
        lt = b.op(COMPARE_OPS["lt"], x, b.const(torch.tensor(0.0)), group=0)
        outs += [
            b.op(BINARY_OPS["logical_and"], gt, lt, group=0),
            b.op(BINARY_OPS["logical_or"], gt, lt, group=0),
        ]
        outs.append(b.op(WhereOp, gt, x, y, group=0))
        return outs

    check(build([a, b_], body), [a, b_])


def test_pow_forms_clamp_cast_and_dtypes():
    x = torch.randn(5, 19)
    ints = torch.randint(-5, 5, (5, 19))
    half = torch.randn(5, 19).half()

    def body(b):
        x, i, h = b.args
        outs = [
            b.op(BINARY_OPS["pow"], x, b.const(torch.tensor(e)), group=0) for e in (2.0, 3.0, -1.0)
        ]
        outs.append(
            b.op(
                BINARY_OPS["pow"],
                b.op(UNARY_OPS["abs"], x, group=0),
                b.const(torch.tensor(0.5)),
                group=0,
            )
        )
        outs.append(
            b.op(BINARY_OPS["pow"], x, b.op(CastOp, i, dtype="float32", group=0), group=0)
        )  # general form
        outs.append(b.op(ClampOp, x, min=-0.5, max=0.25, group=0))
        outs.append(b.op(ClampOp, i, min=-1.5, group=0))
        outs.append(
            b.op(BINARY_OPS["add"], i, b.const(torch.tensor(3)), group=0)
        )  # int64 arithmetic
        outs.append(b.op(BINARY_OPS["div"], i, b.const(torch.tensor(2)), group=0))  # true division
        outs.append(b.op(CastOp, x, dtype="int32", group=0))
        outs.append(b.op(UNARY_OPS["gelu"], h, group=0, approximate="none"))  # fp16 in, fp16 out
        return outs

    check(build([x, ints, half], body), [x, ints, half], tol=2e-3)


def test_data_movement_chain_is_one_kernel_with_masks():
    """reshape -> permute -> slice -> expand -> add: one kernel, index arithmetic only."""
    x = torch.randn(2, 3, 35)
    y = torch.randn(5, 1, 3)

    def body(b):
        r = b.op(ReshapeOp, b.args[0], shape=(6, 5, 7), group=0)
        p = b.op(PermuteOp, r, dims=(1, 2, 0), group=0)  # (5, 7, 6)
        s = b.op(SliceOp, p, dim=2, start=1, end=6, step=2, group=0)  # (5, 7, 3)
        e = b.op(ExpandOp, b.args[1], shape=(5, 7, 3), group=0)
        return [b.op(BINARY_OPS["mul"], s, e, group=0)]

    kernel = check(build([x, y], body), [x, y])
    text = source(kernel)
    assert text.count("@triton.jit") == 1
    assert "mask=(offs1 < 105)" in text  # 105 = 5 * 7 * 3, a ragged block
    assert "tl.load(in0 + " in text and "tl.store(out0 + offs1" in text


def test_concat_reads_each_input_under_its_predicate():
    """Rotary's rotate_half: cat(-x[..., h:], x[..., :h]) then a multiply, in one kernel."""
    x = torch.randn(2, 3, 10)
    cos = torch.randn(3, 10)

    def body(b):
        hi = b.op(SliceOp, b.args[0], dim=-1, start=5, end=10, step=1, group=0)
        lo = b.op(SliceOp, b.args[0], dim=-1, start=0, end=5, step=1, group=0)
        neg = b.op(UNARY_OPS["neg"], hi, group=0)
        cat = b.op(ConcatOp, neg, lo, dim=-1, group=0)
        return [b.op(BINARY_OPS["mul"], cat, b.param("cos", cos), group=0)]

    kernel = check(build([x], body), [x])
    assert "tl.where(" in source(kernel) and ">= 5" in source(kernel)


def test_embedding_gather_and_batch_norm():
    table = torch.randn(50, 12)
    ids = torch.randint(0, 50, (3, 7))
    img = torch.randn(2, 4, 3, 5)
    stats = [torch.randn(4), torch.rand(4) + 0.5, torch.randn(4), torch.randn(4)]

    def body(b):
        emb = b.op(EmbeddingOp, b.param("table", table), b.args[0], group=0)
        scaled = b.op(BINARY_OPS["mul"], emb, b.const(torch.tensor(2.0)), group=0)
        bn = b.op(
            BatchNormOp,
            b.args[1],
            *[b.param(f"s{i}", t) for i, t in enumerate(stats)],
            eps=1e-5,
            group=1,
        )
        return [scaled, b.op(UNARY_OPS["relu"], bn, group=1)]

    kernel = check(build([ids, img], body), [ids, img])
    assert source(kernel).count("@triton.jit") == 2


def test_outputs_of_different_sizes_are_sections_of_one_kernel():
    x = torch.randn(6, 10)

    def body(b):
        y = b.op(UNARY_OPS["exp"], b.args[0], group=0)
        s = b.op(SliceOp, y, dim=1, start=0, end=3, step=1, group=0)  # a smaller output
        return [y, b.op(UNARY_OPS["neg"], s, group=0)]

    kernel = check(build([x], body), [x])
    text = source(kernel)
    assert text.count("@triton.jit") == 1
    assert "section = tl.program_id(1)" in text and "if section == 1:" in text


def test_ungrouped_program_gets_one_kernel_per_op():
    x = torch.randn(8, 8)

    def body(b):
        y = b.op(UNARY_OPS["sigmoid"], b.args[0])
        z = b.op(PermuteOp, y, dims=(1, 0))
        return [b.op(BINARY_OPS["add"], z, y)]

    kernel = check(build([x], body), [x])
    assert source(kernel).count("@triton.jit") == kernel.generated.num_groups == 3


def test_small_blocks_cover_many_programs():
    x = torch.randn(1000)

    def body(b):
        return [b.op(UNARY_OPS["tanh"], b.args[0], group=0)]

    kernel = check(build([x], body), [x], overrides={"pointwise": {"BLOCK": 64}})
    assert "g0_pointwise[(16,)]" in source(kernel)  # ceil(1000 / 64) programs
