"""passes/canonicalize.py: the rule table, before/after structure, and extending it."""

from __future__ import annotations

import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.pattern_rewriter import GreedyRewritePatternApplier, PatternRewriteWalker

import ir
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS, CastOp
from ir.ops.movement import ConcatOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from passes import canonicalize, run_pipeline
from passes.canonicalize import CANONICAL_RULES, canonical_patterns, producer, rule


def canonical(text: str, pipeline: str = "kiln-canonicalize") -> ModuleOp:
    module = ir.parse_module(text)
    run_pipeline(module, pipeline, verify=True)
    return module


def test_table_covers_the_documented_rewrites() -> None:
    for op in (ReshapeOp, PermuteOp, SliceOp, ExpandOp, CastOp, ConcatOp):
        assert CANONICAL_RULES[op], op.name
    for name in ("add", "sub", "mul", "div"):
        assert CANONICAL_RULES[BINARY_OPS[name]], name


def test_before_after_structurally_equal() -> None:
    before = """
builtin.module {
  func.func @forward(%x: tensor<2x3x4xf32>) -> tensor<4x6xf32> {
    %p = "kiln.permute"(%x) <{dims = array<i64: 2, 0, 1>}> : (tensor<2x3x4xf32>) -> tensor<4x2x3xf32>
    %q = "kiln.permute"(%p) <{dims = array<i64: 0, 1, 2>}> : (tensor<4x2x3xf32>) -> tensor<4x2x3xf32>
    %r = "kiln.reshape"(%q) <{shape = array<i64: 24>}> : (tensor<4x2x3xf32>) -> tensor<24xf32>
    %s = "kiln.reshape"(%r) <{shape = array<i64: 4, 6>}> : (tensor<24xf32>) -> tensor<4x6xf32>
    %c = "kiln.concat"(%s) <{dim = 0 : i64}> : (tensor<4x6xf32>) -> tensor<4x6xf32>
    func.return %c : tensor<4x6xf32>
  }
}"""
    expected = """
builtin.module {
  func.func @forward(%x: tensor<2x3x4xf32>) -> tensor<4x6xf32> {
    %p = "kiln.permute"(%x) <{dims = array<i64: 2, 0, 1>}> : (tensor<2x3x4xf32>) -> tensor<4x2x3xf32>
    %s = "kiln.reshape"(%p) <{shape = array<i64: 4, 6>}> : (tensor<4x2x3xf32>) -> tensor<4x6xf32>
    func.return %s : tensor<4x6xf32>
  }
}"""
    assert canonical(before).is_structurally_equivalent(ir.parse_module(expected))


def test_long_permute_chain_collapses_to_one_or_none() -> None:
    dims = [(1, 2, 0), (2, 0, 1), (1, 0, 2), (1, 0, 2)]  # composes to the identity
    lines, cur, shape = [], "%x", [2, 3, 4]
    for i, d in enumerate(dims):
        new = [shape[j] for j in d]
        t_in, t_out = ("x".join(map(str, s)) + "xf32" for s in (shape, new))
        lines.append(
            f'%p{i} = "kiln.permute"({cur}) <{{dims = array<i64: {", ".join(map(str, d))}>}}>'
            f" : (tensor<{t_in}>) -> tensor<{t_out}>"
        )
        cur, shape = f"%p{i}", new
    text = (
        "builtin.module {\n func.func @forward(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> {\n"
        + "\n".join(lines)
        + f"\n func.return {cur} : tensor<2x3x4xf32>\n }}\n}}"
    )
    module = canonical(text)
    assert list(ir.kiln_ops(ir.entry_function(module))) == []


def test_includes_xdsl_trait_patterns() -> None:
    # arith's own canonicalization (x + 0) runs inside kiln-canonicalize too.
    module = canonical("""
builtin.module {
  func.func @f(%a: i64) -> i64 {
    %c0 = arith.constant 0 : i64
    %b = arith.addi %a, %c0 : i64
    func.return %b : i64
  }
}""")
    assert "arith" not in ir.print_module(module)


def test_a_new_rule_is_one_decorated_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        canonicalize, "CANONICAL_RULES", {k: list(v) for k, v in CANONICAL_RULES.items()}
    )
    relu = UNARY_OPS["relu"]

    @rule(relu)
    def relu_of_relu(op):  # relu is idempotent
        return op.input if producer(op.input, relu) else None

    module = canonical("""
builtin.module {
  func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
    %a = "kiln.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
    %b = "kiln.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    func.return %b : tensor<4xf32>
  }
}""")
    assert [op.name for op in ir.kiln_ops(ir.entry_function(module))] == ["kiln.relu"]


def test_canonical_patterns_run_under_plain_xdsl_rewriting() -> None:
    # What a HasCanonicalizationPatternsTrait on ReshapeOp would hand to xDSL's canonicalize.
    module = ir.parse_module("""
builtin.module {
  func.func @forward(%x: tensor<6xf32>) -> tensor<3x2xf32> {
    %a = "kiln.reshape"(%x) <{shape = array<i64: 2, 3>}> : (tensor<6xf32>) -> tensor<2x3xf32>
    %b = "kiln.reshape"(%a) <{shape = array<i64: 3, 2>}> : (tensor<2x3xf32>) -> tensor<3x2xf32>
    func.return %b : tensor<3x2xf32>
  }
}""")
    walker = PatternRewriteWalker(GreedyRewritePatternApplier(list(canonical_patterns(ReshapeOp))))
    walker.rewrite_module(module)
    module.verify()
    (b,) = [op for op in ir.kiln_ops(ir.entry_function(module)) if op.results[0].uses]
    assert b.operands[0] is ir.entry_function(module).body.block.args[0]
    assert canonical_patterns(UNARY_OPS["exp"]) == ()
