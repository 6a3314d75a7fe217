"""`kiln-canonicalize`: local simplifications of kiln ops, written as a table of rules.

A rule is a small function `op -> replacement | None` registered for one op class with
`@rule(OpClass)`; the replacement is an existing SSA value (the op disappears) or a new
op (it takes the old op's place). A new simplification is one decorated function, and the
table `CANONICAL_RULES` is what the pass, the tests and the docs all read.

Why a Kiln pass and not xDSL's `canonicalize`: xDSL finds canonicalization patterns through
a `HasCanonicalizationPatternsTrait` on each op, and kiln ops live in `ir/`, which may not
import `passes/`. Until `ir/` grows such a trait (see `canonical_patterns`), this pass runs
the table *and* xDSL's trait-based patterns and folders in one greedy walk, so it is a
superset of `canonicalize` and pipelines need only one of the two.

Every rule keeps the function's result types: it fires only when the value it substitutes
has exactly the type of the op's result (no broadcast, no dtype promotion is lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, OpResult, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)
from xdsl.transforms.canonicalize import CanonicalizationRewritePattern
from xdsl.transforms.dead_code_elimination import region_dce

from ir import dtypes
from ir.ops.elementwise import BINARY_OPS, CastOp
from ir.ops.movement import ConcatOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from ir.ops.sources import ConstantOp
from passes.registry import register_pass

Replacement = SSAValue | Operation | None
Rule = Callable[[Any], Replacement]

# op class -> rules tried in order; the first that returns a replacement wins.
CANONICAL_RULES: dict[type[Operation], list[Rule]] = {}

# Constants bigger than this are not inspected for "is it all zeros / ones": reading a
# large dense attribute on every visit would cost more than the rewrite saves.
_MAX_SPLAT_CHECK = 1 << 16


def rule(*op_types: type[Operation]) -> Callable[[Rule], Rule]:
    """Register a rule for each of `op_types` in `CANONICAL_RULES`."""

    def register(fn: Rule) -> Rule:
        for op_type in op_types:
            CANONICAL_RULES.setdefault(op_type, []).append(fn)
        return fn

    return register


def producer(value: SSAValue, op_type: type[Operation]) -> Any:
    """The op of `op_type` that defines `value`, or None (block argument, other op)."""
    if isinstance(value, OpResult) and isinstance(value.op, op_type):
        return value.op
    return None


def splat_value(value: SSAValue) -> float | int | bool | None:
    """The single repeated element of a `kiln.constant`, or None if it is not one."""
    const = producer(value, ConstantOp)
    if const is None or not 0 < dtypes.numel(value.type) <= _MAX_SPLAT_CHECK:
        return None
    flat = const.to_tensor().reshape(-1)
    return flat[0].item() if bool((flat == flat[0]).all()) else None


# ---- data movement ------------------------------------------------------------------


@rule(ReshapeOp, ExpandOp, CastOp)
def same_type_is_identity(op: Any) -> Replacement:
    """A reshape/expand/cast whose result type is its input type changes nothing."""
    return op.input if op.input.type == op.result.type else None


@rule(ReshapeOp)
def reshape_of_reshape(op: ReshapeOp) -> Replacement:
    inner = producer(op.input, ReshapeOp)
    return ReshapeOp.make(inner.input, shape=op.opt("shape")) if inner else None


@rule(PermuteOp)
def identity_permute(op: PermuteOp) -> Replacement:
    dims = op.opt("dims")
    return op.input if tuple(dims) == tuple(range(len(dims))) else None


@rule(PermuteOp)
def permute_of_permute(op: PermuteOp) -> Replacement:
    # y = x.permute(p).permute(q) has y.shape[i] = x.shape[p[q[i]]].
    inner = producer(op.input, PermuteOp)
    if inner is None:
        return None
    p, q = inner.opt("dims"), op.opt("dims")
    return PermuteOp.make(inner.input, dims=tuple(p[i] for i in q))


@rule(SliceOp)
def full_slice(op: SliceOp) -> Replacement:
    shape = dtypes.shape_of(op.input.type)
    dim = op.opt("dim") % len(shape)
    full = (op.opt("start"), op.opt("end"), op.opt("step")) == (0, shape[dim], 1)
    return op.input if full else None


@rule(ConcatOp)
def concat_of_one(op: ConcatOp) -> Replacement:
    return op.inputs[0] if len(op.inputs) == 1 else None


# ---- arithmetic identities ----------------------------------------------------------

# op name -> (identity element, may the constant be on the left too?)
# x + 0 -> x may turn a -0.0 input's +0.0 result back into -0.0; like every ML compiler
# (and LLVM under nsz) we accept that, since -0.0 == 0.0 compares equal.
ARITH_IDENTITIES: dict[str, tuple[int, bool]] = {
    "add": (0, True),
    "sub": (0, False),
    "mul": (1, True),
    "div": (1, False),
}


def _drop_identity_operand(op: Any) -> Replacement:
    identity, commutes = ARITH_IDENTITIES[op.name.removeprefix("kiln.")]
    pairs = [(op.lhs, op.rhs)] + ([(op.rhs, op.lhs)] if commutes else [])
    for x, const in pairs:
        if x.type != op.result.type:
            continue  # dropping the op would lose a broadcast or a dtype promotion
        if op.name == "kiln.div" and not dtypes.is_float(x.type):
            continue  # torch.div on integers is true division; keep its semantics
        value = splat_value(const)
        if value is not None and value == identity:
            return x
    return None


for _name in ARITH_IDENTITIES:
    rule(BINARY_OPS[_name])(_drop_identity_operand)


# ---- the pass -----------------------------------------------------------------------


class RuleTablePattern(RewritePattern):
    """Applies the first matching rule of a table to each op; the bridge to xDSL rewriting."""

    def __init__(self, rules: dict[type[Operation], list[Rule]]) -> None:
        self.rules = rules

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        for fn in self.rules.get(type(op), ()):
            out = fn(op)
            if out is None:
                continue
            if isinstance(out, Operation):
                rewriter.replace(op, out)
            else:
                assert out.type == op.results[0].type, f"rule {fn.__name__} changed a type"
                rewriter.replace(op, [], [out])
            return


def canonical_patterns(op_type: type[Operation]) -> tuple[RewritePattern, ...]:
    """The patterns for one op class: what a `HasCanonicalizationPatternsTrait` on the op
    would return, once `ir/` has such a trait and this table moves next to it."""
    rules = CANONICAL_RULES.get(op_type)
    return (RuleTablePattern({op_type: rules}),) if rules else ()


@register_pass
@dataclass(frozen=True)
class KilnCanonicalizePass(ModulePass):
    """Apply `CANONICAL_RULES` and xDSL's canonicalization patterns to a fixpoint,
    deleting dead ops as it goes (as MLIR's canonicalizer does)."""

    name = "kiln-canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        pattern = GreedyRewritePatternApplier(
            [RuleTablePattern(CANONICAL_RULES), CanonicalizationRewritePattern()],
            ctx=ctx,
            folding_enabled=True,
        )
        PatternRewriteWalker(pattern, post_walk_func=region_dce).rewrite_module(op)
