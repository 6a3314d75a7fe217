"""Property test: the default pipeline on random movement/elementwise programs.

Hypothesis builds small functions from reshape, permute, slice, expand, concat, cast,
unary and binary ops (with constants 0 and 1 often, so identities fire, and constant
subexpressions, so folding fires) on random shapes. After `DEFAULT_PIPELINE`, verified
after every pass, the interpreter must give the same results, and the IR must be at a
fixpoint: no rule of the table still applies, nothing foldable or dead is left.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pass_harness import assert_same_numerics
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region, SSAValue

import ir
from ir import dtypes
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS, CastOp, broadcast_shapes
from ir.ops.movement import ConcatOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from ir.ops.sources import ConstantOp
from passes import DEFAULT_PIPELINE, run_pipeline
from passes.canonicalize import CANONICAL_RULES
from passes.fold_constants import evaluate

MAX_NUMEL = 256


class Builder:
    """Appends random ops to a block; `cur` is the value the next step transforms."""

    def __init__(self, data: st.DataObject, shape: tuple[int, ...]) -> None:
        self.draw = data.draw
        self.block = Block(arg_types=[dtypes.tensor_type(shape, torch.float32)])
        self.values: list[SSAValue] = [self.block.args[0]]
        self.cur: SSAValue = self.block.args[0]

    def add(self, op, keep: bool = True) -> SSAValue:
        self.block.add_op(op)
        if keep:
            self.values.append(op.results[0])
            self.cur = op.results[0]
        return op.results[0]

    def shape(self) -> tuple[int, ...]:
        return dtypes.shape_of(self.cur.type)

    def constant(self, shape: tuple[int, ...], partner: SSAValue) -> SSAValue:
        """A splat constant, often 0 or 1. A 0-d one takes its partner's dtype: kiln's
        `infer_types` promotes 0-d tensors like any other while torch does not (f32 [n] +
        f64 [] is f32 in torch), so mixing them would test that ir/ bug, not the passes."""
        value = self.draw(st.sampled_from([0.0, 1.0, 1.0, 0.0, 2.0, -0.5]))
        dtype = self.draw(st.sampled_from([torch.float32, torch.float32, torch.float64]))
        if shape == ():
            dtype = dtypes.dtype_of(partner.type)
        return self.add(ConstantOp.of(torch.full(shape, value, dtype=dtype)), keep=False)

    # ---- steps ----------------------------------------------------------------------
    def reshape(self) -> None:
        factors = _prime_factors(math.prod(self.shape()))
        rank = self.draw(st.integers(1, 4))
        dims = [1] * rank
        for f in factors:
            dims[self.draw(st.integers(0, rank - 1))] *= f
        self.add(ReshapeOp.make(self.cur, shape=tuple(dims)))

    def permute(self) -> None:
        dims = self.draw(st.permutations(range(len(self.shape()))))
        self.add(PermuteOp.make(self.cur, dims=tuple(dims)))

    def slice(self) -> None:
        shape = self.shape()
        dim = self.draw(st.integers(0, len(shape) - 1))
        start = self.draw(st.integers(0, shape[dim] - 1))
        end = self.draw(st.integers(start + 1, shape[dim]))
        step = self.draw(st.integers(1, 2))
        full = self.draw(st.booleans())
        start, end, step = (0, shape[dim], 1) if full else (start, end, step)
        self.add(SliceOp.make(self.cur, dim=dim - len(shape), start=start, end=end, step=step))

    def expand(self) -> None:
        grow = self.draw(st.booleans()) and 2 * math.prod(self.shape()) <= MAX_NUMEL
        self.add(ExpandOp.make(self.cur, shape=((2,) if grow else ()) + self.shape()))

    def concat(self) -> None:
        twice = self.draw(st.booleans()) and 2 * math.prod(self.shape()) <= MAX_NUMEL
        dim = self.draw(st.integers(0, len(self.shape()) - 1))
        self.add(ConcatOp.make(*([self.cur] * (2 if twice else 1)), dim=dim))

    def cast(self) -> None:
        target = self.draw(st.sampled_from(["float32", "float64"]))
        self.add(CastOp.make(self.cur, dtype=target))

    def unary(self) -> None:
        name = self.draw(st.sampled_from(["relu", "neg", "tanh", "sigmoid"]))
        self.add(UNARY_OPS[name].make(self.cur))
        if self.draw(st.booleans()):  # the same op again: work for cse
            self.add(UNARY_OPS[name].make(self.values[-2]), keep=False)

    def binary_constant(self) -> None:
        shape = self.shape()
        cshape = self.draw(st.sampled_from([(), shape[-1:], (1,) * len(shape), shape]))
        const = self.constant(cshape, self.cur)
        if self.draw(st.booleans()):  # a constant subexpression: work for fold-constants
            const = self.add(BINARY_OPS["mul"].make(const, self.constant((), const)), keep=False)
        name = self.draw(st.sampled_from(["add", "sub", "mul", "div"]))
        lhs, rhs = (const, self.cur) if self.draw(st.booleans()) else (self.cur, const)
        self.add(BINARY_OPS[name].make(lhs, rhs))

    def binary_earlier(self) -> None:
        other = self.draw(st.sampled_from(self.values))
        try:
            out = broadcast_shapes(self.shape(), dtypes.shape_of(other.type))
        except ValueError:
            return
        if math.prod(out) <= MAX_NUMEL:
            self.add(BINARY_OPS[self.draw(st.sampled_from(["add", "mul"]))].make(self.cur, other))

    STEPS = (
        "reshape",
        "permute",
        "slice",
        "expand",
        "concat",
        "cast",
        "unary",
        "binary_constant",
        "binary_earlier",
    )

    def finish(self) -> ModuleOp:
        results = [self.cur]
        if self.draw(st.booleans()):
            results.append(self.draw(st.sampled_from(self.values)))
        self.block.add_op(func.ReturnOp(*results))
        fn = func.FuncOp(
            "forward", ([self.block.args[0].type], [r.type for r in results]), Region(self.block)
        )
        module = ModuleOp([fn])
        module.verify()
        return module


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def assert_fixpoint(module: ModuleOp) -> None:
    """Nothing the pipeline knows how to simplify is left."""
    for op in ir.kiln_ops(ir.entry_function(module)):
        assert all(r.uses for r in op.results), f"dead {op.name} left"
        for fn in CANONICAL_RULES.get(type(op), ()):
            assert fn(op) is None, f"rule {fn.__name__} still applies to {op.name}"
        if not isinstance(op, ConstantOp):
            assert evaluate(op) is None, f"{op.name} could still be folded"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
def test_default_pipeline_preserves_results_and_reaches_fixpoint(data, shape) -> None:
    builder = Builder(data, shape)
    for _ in range(data.draw(st.integers(1, 8))):
        getattr(builder, data.draw(st.sampled_from(Builder.STEPS)))()
    before = builder.finish()
    after = before.clone()
    run_pipeline(after, DEFAULT_PIPELINE, verify=True)
    assert_same_numerics(before, after, seed=len(shape))
    assert_fixpoint(after)
