"""`fold-constants`: evaluate ops whose operands are all literals, at compile time.

Each foldable op is run once with its own `reference` implementation (the interpreter's
semantics, so folding cannot disagree with it) and replaced by a `kiln.constant`. Input
constants the fold leaves unused are erased with it, so `-p fold-constants` alone prints
tidy IR.

What is not folded, and why:
- `kiln.param`: its value lives in `Program.params`, outside the IR; folding weights into
  literals would copy the model into the IR text and tie the IR to one set of weights.
- results larger than `max-elements` (default 4096): a constant is printed inline, so a
  folded 1M-element tensor would turn a page of IR into megabytes and make every
  `--dump-ir` and FileCheck test unreadable; a large constant is cheaper to compute at
  run time than to carry as text.
- ops whose reference raises, or returns a tensor whose shape or dtype differs from the
  op's declared result type: the IR's types are the contract; we leave such an op for the
  verifier and tests to catch rather than change a type silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern

from ir import dtypes
from ir.core import KilnOp
from ir.ops.sources import ConstantOp, ParamOp
from passes.canonicalize import producer
from passes.registry import register_pass

DEFAULT_MAX_ELEMENTS = 4096


def evaluate(op: KilnOp, max_elements: int = DEFAULT_MAX_ELEMENTS) -> list[torch.Tensor] | None:
    """The values of `op`'s results if all its operands are constants and it may be folded."""
    if isinstance(op, (ConstantOp, ParamOp)):
        return None
    consts = [producer(v, ConstantOp) for v in op.operands]
    if any(c is None for c in consts):
        return None
    if any(dtypes.numel(r.type) > max_elements for r in op.results):
        return None
    try:
        out = op.reference(*[c.to_tensor() for c in consts])
    except Exception:  # noqa: BLE001 - an op the reference cannot evaluate is not folded
        return None
    outs = list(out) if isinstance(out, tuple) else [out]
    if len(outs) != len(op.results):
        return None
    for t, r in zip(outs, op.results):
        if tuple(t.shape) != dtypes.shape_of(r.type) or t.dtype != dtypes.dtype_of(r.type):
            return None
    return outs


class FoldConstantPattern(RewritePattern):
    """Replace an all-constant kiln op by `kiln.constant`s holding its results."""

    def __init__(self, max_elements: int) -> None:
        self.max_elements = max_elements

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        if not isinstance(op, KilnOp):
            return
        values = evaluate(op, self.max_elements)
        if values is None:
            return
        inputs = {v.op for v in op.operands}  # type: ignore[attr-defined]
        try:
            folded = [ConstantOp.of(t) for t in values]
        except (TypeError, ValueError):  # a dtype a dense attribute cannot hold
            return
        rewriter.replace(op, folded, [c.result for c in folded])
        for const in inputs:
            if not any(r.uses for r in const.results):
                rewriter.erase(const)


@register_pass
@dataclass(frozen=True)
class FoldConstantsPass(ModulePass):
    """Fold every kiln op whose operands are all `kiln.constant` (see the module docstring)."""

    name = "fold-constants"
    max_elements: int = DEFAULT_MAX_ELEMENTS

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FoldConstantPattern(self.max_elements)).rewrite_module(op)
