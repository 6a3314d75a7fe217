"""Every kiln op: interpreter numerics and shape/dtype inference against plain torch.

The cases (inputs, options, expected torch) live in `ir_cases.py`; each runs as a one-op
module through `ir.run`, so this also checks that `make`, the verifier and the
interpreter agree on each op.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ir_builders import function_of, run_one_op
from ir_cases import CASES, SOURCE_OP_NAMES, dispatch_loop

import ir
from ir import dtypes
from ir.ops import ALL_OPS
from ir.ops.elementwise import BINARY_OPS
from ir.ops.moe import MoeCombineOp, MoeDispatchOp
from ir.ops.movement import SliceOp
from ir.ops.sources import ConstantOp, ParamOp


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_torch(case):
    outputs, op = run_one_op(case.op, case.inputs, **case.options)
    expected = case.expect()
    assert len(op.results) == len(expected) == len(outputs)
    for result, out, want in zip(op.results, outputs, expected):
        # Shape inference (made before anything ran) says what torch produces.
        assert dtypes.shape_of(result.type) == tuple(want.shape), (
            f"{case.id}: inferred {result.type}"
        )
        assert dtypes.dtype_of(result.type) == want.dtype, f"{case.id}: inferred {result.type}"
        torch.testing.assert_close(out, want, atol=case.atol, rtol=case.rtol)


def test_every_op_has_a_case():
    """A new op in ALL_OPS must get a case in ir_cases.py (or a source test here)."""
    covered = {c.op.name for c in CASES} | SOURCE_OP_NAMES
    registered = {op.name for op in ALL_OPS}
    assert registered - covered == set(), "ops without a numerics test"
    assert covered - registered == set(), "cases for ops that are not registered"


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# ---- sources -------------------------------------------------------------------------
def test_param_reads_program_params():
    t = dtypes.tensor_type((3, 2), torch.float32)

    def body(args):
        w = ParamOp.of("layer.weight", t)
        return [w], [w.result]

    module, _ = function_of([], body)
    value = torch.randn(3, 2)
    (out,) = ir.run(ir.Program(module, {"layer.weight": value}))
    assert out is value
    with pytest.raises(ir.InterpreterError, match="layer.weight"):
        ir.run(module)


@pytest.mark.parametrize(
    "value",
    [
        torch.tensor(2.5),
        torch.randn(2, 3),
        torch.tensor([[True, False]]),
        torch.arange(4, dtype=torch.int32),
    ],
    ids=["f32-scalar", "f32-2d", "bool", "i32"],
)
def test_constant_holds_its_value(value):
    def body(args):
        c = ConstantOp.of(value)
        return [c], [c.result]

    module, fn = function_of([], body)
    (out,) = ir.run(module)
    torch.testing.assert_close(out, value)
    (op,) = ir.kiln_ops(fn)
    assert dtypes.shape_of(op.result.type) == tuple(value.shape)
    assert dtypes.dtype_of(op.result.type) == value.dtype


# ---- mixture-of-experts routing rules ------------------------------------------------
def test_dispatch_drops_tokens_past_capacity():
    tokens = torch.arange(8.0).reshape(4, 2)
    indices = torch.zeros(4, 1, dtype=torch.int64)  # every token wants expert 0
    (buffers, slots), _ = run_one_op(MoeDispatchOp, [tokens, indices], num_experts=2, capacity=2)
    assert slots[:, 0].tolist() == [0, 1, -1, -1]
    torch.testing.assert_close(buffers[0], tokens[:2])
    assert not buffers[1].any(), "an expert no token chose stays empty"


def test_dispatch_first_choices_before_second():
    # Token 0's second choice and token 1's first choice both want expert 1 (capacity 1):
    # the first choice wins even though token 0 comes first.
    tokens = torch.tensor([[1.0], [2.0]])
    indices = torch.tensor([[0, 1], [1, 0]])
    (buffers, slots), _ = run_one_op(MoeDispatchOp, [tokens, indices], num_experts=2, capacity=1)
    assert slots.tolist() == [[0, -1], [0, -1]]
    assert buffers[:, 0, 0].tolist() == [1.0, 2.0]


def test_combine_of_dispatch_with_identity_experts_gives_weighted_tokens():
    t, d, e, k, capacity = 10, 4, 3, 2, 4
    gen = torch.Generator().manual_seed(1)
    tokens, weights = torch.randn(t, d, generator=gen), torch.rand(t, k, generator=gen)
    # Distinct experts per token, as top-k gives; 20 choices overflow 3 x 4 slots.
    indices = torch.stack([torch.randperm(e, generator=gen)[:k] for _ in range(t)])
    types = [dtypes.tensor_type(x.shape, x.dtype) for x in (tokens, indices, weights)]

    def body(args):
        tok, idx, w = args
        dispatch = MoeDispatchOp.make(tok, idx, num_experts=e, capacity=capacity)
        combine = MoeCombineOp.make(dispatch.buffers, idx, dispatch.slots, w)
        return [dispatch, combine], [combine.result, dispatch.slots]

    module, _ = function_of(types, body)
    out, slots = ir.run(module, tokens, indices, weights)
    assert (slots == -1).any(), "the case should drop some tokens"
    torch.testing.assert_close(slots, dispatch_loop(tokens, indices, e, capacity)[1])
    kept_weight = torch.where(slots >= 0, weights, 0.0).sum(1, keepdim=True)
    torch.testing.assert_close(out, tokens * kept_weight)


# ---- properties over many shapes -----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([1, 3]), min_size=0, max_size=3),
    st.lists(st.sampled_from([1, 3]), min_size=0, max_size=3),
)
def test_binary_broadcast_shapes_match_torch(a_shape, b_shape):
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    (out,), op = run_one_op(BINARY_OPS["add"], [a, b])
    assert dtypes.shape_of(op.result.type) == tuple((a + b).shape)
    torch.testing.assert_close(out, a + b)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 9), data=st.data())
def test_slice_shape_matches_python_slicing(size, data):
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    step = data.draw(st.integers(1, 4))
    x = torch.randn(2, size)
    (out,), op = run_one_op(SliceOp, [x], dim=1, start=start, end=end, step=step)
    assert dtypes.shape_of(op.result.type) == tuple(x[:, start:end:step].shape)
    torch.testing.assert_close(out, x[:, start:end:step])
