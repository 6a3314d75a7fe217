"""Kernel keys (`ir/hashing.py`) in both directions.

Equivalent kernels written differently (SSA names, order of independent ops, operands of
commutative ops swapped, parameters renamed) get one key; every change that can change
the result (shape, dtype, option, op kind, operand order of sub/matmul, sharing of a
parameter, target, versions) gets another. Random graphs check both properties against
the interpreter: a rewrite keeps key and outputs, and a mutation that changes the
outputs always changes the key.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Block, Region

import ir
from ir.dtypes import tensor_type
from ir.hashing import canonical_form, is_kernel_key, kernel_key
from ir.ops.contraction import LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS, CastOp
from ir.ops.normalization import LayerNormOp, SoftmaxOp
from ir.ops.sources import ParamOp
from ir.program import Program

VERSIONS = {"kiln-codegen": "1", "tvm": "0.27.0"}
F32 = torch.float32


def key(module_or_program, target: str = "llvm -mcpu=znver5", versions=VERSIONS) -> str:
    return kernel_key(module_or_program, target, versions)


def module_from_text(body: str, signature: str) -> ModuleOp:
    return ir.parse_module(
        f"builtin.module {{\n  func.func @forward{signature} {{\n{body}\n  }}\n}}"
    )


# ---- hand-written equivalences -----------------------------------------------------

ATTN_SIG = "(%q: tensor<2x8x16xf32>, %k: tensor<2x16x8xf32>) -> tensor<2x8x8xf32>"
ATTN = """
    %s = "kiln.matmul"(%q, %k) : (tensor<2x8x16xf32>, tensor<2x16x8xf32>) -> tensor<2x8x8xf32>
    %c = "kiln.constant"() <{value = dense<0.25> : tensor<f32>}> : () -> tensor<f32>
    %t = "kiln.mul"(%s, %c) : (tensor<2x8x8xf32>, tensor<f32>) -> tensor<2x8x8xf32>
    %p = "kiln.softmax"(%t) <{dim = -1 : i64}> : (tensor<2x8x8xf32>) -> tensor<2x8x8xf32>
    func.return %p : tensor<2x8x8xf32>
"""


def test_ssa_names_do_not_matter():
    renamed = ATTN.replace("%s ", "%scores ").replace("%s,", "%scores,").replace("%p", "%probs")
    renamed = renamed.replace("%t", "%0").replace("%c", "%scale")
    sig = ATTN_SIG.replace("%q", "%query").replace("%k", "%key")
    renamed = renamed.replace("%q", "%query").replace("%k", "%key")
    assert renamed != ATTN
    assert key(module_from_text(renamed, sig)) == key(module_from_text(ATTN, ATTN_SIG))


def test_commutative_operands_and_independent_order_do_not_matter():
    swapped = ATTN.replace(
        '"kiln.mul"(%s, %c) : (tensor<2x8x8xf32>, tensor<f32>)',
        '"kiln.mul"(%c, %s) : (tensor<f32>, tensor<2x8x8xf32>)',
    )
    constant_first = swapped.split("\n")
    constant_first[1], constant_first[2] = constant_first[2], constant_first[1]
    reordered = "\n".join(constant_first)
    assert key(module_from_text(reordered, ATTN_SIG)) == key(module_from_text(ATTN, ATTN_SIG))


BINARY_TEXT = """
    %r = "kiln.{op}"({x}, {y}) : (tensor<8x8xf32>, tensor<8x8xf32>) -> {t}
    func.return %r : {t}
"""


def test_non_commutative_operand_order_matters():
    sig = "(%a: tensor<8x8xf32>, %b: tensor<8x8xf32>) -> tensor<8x8xf32>"
    for op in ("sub", "matmul", "div", "lt"):
        rtype = "tensor<8x8xi1>" if op == "lt" else "tensor<8x8xf32>"
        s = sig.replace("-> tensor<8x8xf32>", f"-> {rtype}")
        ab = module_from_text(BINARY_TEXT.format(op=op, x="%a", y="%b", t=rtype), s)
        ba = module_from_text(BINARY_TEXT.format(op=op, x="%b", y="%a", t=rtype), s)
        assert key(ab) != key(ba), op
    for op in ("add", "mul", "maximum", "minimum", "eq", "ne"):
        rtype = "tensor<8x8xi1>" if op in ("eq", "ne") else "tensor<8x8xf32>"
        s = sig.replace("-> tensor<8x8xf32>", f"-> {rtype}")
        ab = module_from_text(BINARY_TEXT.format(op=op, x="%a", y="%b", t=rtype), s)
        ba = module_from_text(BINARY_TEXT.format(op=op, x="%b", y="%a", t=rtype), s)
        assert key(ab) == key(ba), op


def mlp(
    names=("w1", "b1", "w2"), shape=(4, 16), hidden=32, dtype=F32, act="gelu", shared=False, **gelu
):
    """x -> linear(w1, b1) -> act -> linear(w2) as a Program with random weights."""
    x_t = tensor_type(shape, dtype)
    w1_t, b1_t = tensor_type((hidden, shape[-1]), dtype), tensor_type((hidden,), dtype)
    w2_t = tensor_type((shape[-1], hidden), dtype)
    block = Block(arg_types=[x_t])
    w1 = ParamOp.of(names[0], w1_t)
    b1 = ParamOp.of(names[1], b1_t)
    w2 = ParamOp.of(names[0] if shared else names[2], w2_t if not shared else w1_t)
    h = LinearOp.make(block.args[0], w1, b1)
    a = UNARY_OPS[act].make(h, **gelu)
    if shared:  # y = a @ w1 with the same weight read twice (square case)
        y = MatmulOp.make(a, w2)
    else:
        y = LinearOp.make(a, w2, None)
    block.add_ops([w1, b1, w2, h, a, y, func.ReturnOp(y)])
    fn = func.FuncOp("forward", ([x_t], [y.result.type]), Region(block))
    params = {names[0]: torch.randn(hidden, shape[-1]), names[1]: torch.randn(hidden)}
    if not shared:
        params[names[2]] = torch.randn(shape[-1], hidden)
    return Program(ModuleOp([fn]), params)


def test_parameter_names_and_values_do_not_matter():
    a, b = mlp(("w1", "b1", "w2")), mlp(("fc1.weight", "fc1.bias", "fc2.weight"))
    assert a.params["w1"].ne(b.params["fc1.weight"]).any()  # different values too
    assert key(a) == key(b)
    assert key(a) == key(a.module) == key(a.forward)


def test_every_semantic_change_changes_the_key():
    base = key(mlp())
    variants = {
        "shape": mlp(shape=(8, 16)),
        "hidden": mlp(hidden=64),
        "dtype": mlp(dtype=torch.float16),
        "op kind": mlp(act="relu"),
        "gelu approximate": mlp(approximate="tanh"),
    }
    keys = {name: key(p) for name, p in variants.items()}
    assert base not in keys.values()
    assert len(set(keys.values())) == len(keys)
    assert key(mlp(), target="cuda") != base
    assert key(mlp(), versions={**VERSIONS, "tvm": "0.28.0"}) != base
    assert key(mlp(), versions={**VERSIONS, "kiln-codegen": "2"}) != base
    assert key(mlp(), versions={"kiln-codegen": "1"}) != base


def test_sharing_a_parameter_matters():
    """`x @ w @ w` reads one weight twice; `x @ w1 @ w2` reads two: different kernels."""
    t = tensor_type((8, 8), F32)

    def build(second: str) -> Program:
        block = Block(arg_types=[t])
        w1, w2 = ParamOp.of("w1", t), ParamOp.of(second, t)
        m1 = MatmulOp.make(block.args[0], w1)
        m2 = MatmulOp.make(m1, w2)
        block.add_ops([w1, w2, m1, m2, func.ReturnOp(m2)])
        return Program(ModuleOp([func.FuncOp("forward", ([t], [t]), Region(block))]))

    assert key(build("w1")) != key(build("w2"))
    assert key(build("w2")) == key(build("other"))


def test_option_values_change_the_key():
    x = tensor_type((4, 8), F32)

    def one(make: Callable) -> str:
        block = Block(arg_types=[x])
        op = make(block.args[0])
        block.add_ops([op, func.ReturnOp(*op.results)])
        fn = func.FuncOp("forward", ([x], [r.type for r in op.results]), Region(block))
        return key(ModuleOp([fn]))

    softmax = {one(lambda v, d=d: SoftmaxOp.make(v, dim=d)) for d in (0, 1)}
    eps = {
        one(lambda v, e=e: LayerNormOp.make(v, eps=e, ndims=1)) for e in (1e-5, 1e-6, 1.00001e-5)
    }
    cast = {one(lambda v, d=d: CastOp.make(v, dtype=d)) for d in ("float16", "bfloat16")}
    assert len(softmax) == 2 and len(eps) == 3 and len(cast) == 2


def test_constant_values_change_the_key():
    variants = {
        key(module_from_text(ATTN.replace("0.25", v), ATTN_SIG))
        for v in ("0.25", "0.125", "2.5e-01")
    }
    assert len(variants) == 2  # 0.25 and 2.5e-01 are one number


def test_layer_norm_weight_is_not_its_bias():
    """The optional-operand segments say which affine operand is present."""
    x, w = tensor_type((4, 8), F32), tensor_type((8,), F32)

    def build(weight: bool) -> ModuleOp:
        block = Block(arg_types=[x, w])
        op = LayerNormOp.make(
            block.args[0],
            block.args[1] if weight else None,
            None if weight else block.args[1],
            eps=1e-5,
            ndims=1,
        )
        block.add_ops([op, func.ReturnOp(op)])
        return ModuleOp([func.FuncOp("forward", ([x, w], [x]), Region(block))])

    assert key(build(True)) != key(build(False))


def test_schedule_decisions_do_not_change_the_key_but_quantization_does():
    p = mlp()
    base = key(p)
    for i, op in enumerate(p.forward.body.block.ops):
        op.attributes["group"] = IntegerAttr(i % 2, i64)
        op.attributes["memory"] = StringAttr("sram")
    assert key(p) == base
    linear = next(op for op in p.kiln_ops() if op.name == "kiln.linear")
    linear.attributes["quant"] = StringAttr("int8")
    assert key(p) != base


def test_returned_values_are_ordered():
    sig = "(%a: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)"
    body = """
    %r = "kiln.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    %e = "kiln.exp"(%a) : (tensor<4xf32>) -> tensor<4xf32>
"""
    first = module_from_text(body + "    func.return %r, %e : tensor<4xf32>, tensor<4xf32>", sig)
    second = module_from_text(body + "    func.return %e, %r : tensor<4xf32>, tensor<4xf32>", sig)
    assert key(first) != key(second)


def test_key_format_is_what_the_cache_service_accepts():
    from compiler.service.models import KEY_PATTERN

    k = key(mlp())
    assert is_kernel_key(k) and len(k) == 64
    assert __import__("re").fullmatch(KEY_PATTERN, k)


# ---- random graphs -----------------------------------------------------------------

X = tensor_type((6, 6), F32)
UNARY = ("relu", "exp", "neg", "tanh")
COMMUTATIVE = ("add", "mul", "maximum", "minimum")
BINARY = COMMUTATIVE + ("sub", "div", "matmul")


@dataclass
class Node:
    kind: str  # a unary or binary op name, "softmax", "param" or "arg"
    inputs: list[int] = field(default_factory=list)  # indices of earlier nodes
    option: int = 0  # softmax dim, or which parameter


@dataclass
class Spec:
    """A random DAG over (6, 6) tensors: two arguments, then ops; returns `outputs`."""

    nodes: list[Node]
    outputs: list[int]

    def build(self, rng: random.Random | None = None) -> ModuleOp:
        """The kernel as a module; with `rng`, written differently but equivalently."""
        order = self.topological_order(rng)
        prefix = f"layer{rng.randrange(1000)}.w" if rng else "w"
        block = Block(arg_types=[X, X])
        values: dict[int, object] = {0: block.args[0], 1: block.args[1]}
        ops = []
        for i in order:
            node = self.nodes[i]
            inputs = [values[j] for j in node.inputs]
            if node.kind == "param":
                op = ParamOp.of(f"{prefix}{node.option}", X)
            elif node.kind == "softmax":
                op = SoftmaxOp.make(inputs[0], dim=node.option)
            elif node.kind in UNARY:
                op = UNARY_OPS[node.kind].make(inputs[0])
            elif node.kind == "matmul":
                op = MatmulOp.make(*inputs)
            else:
                if rng and node.kind in COMMUTATIVE and rng.random() < 0.5:
                    inputs = inputs[::-1]
                op = BINARY_OPS[node.kind].make(*inputs)
            if rng:
                op.results[0].name_hint = f"v{rng.randrange(10**6)}"
            ops.append(op)
            values[i] = op.results[0]
        results = [values[i] for i in self.outputs]
        block.add_ops([*ops, func.ReturnOp(*results)])
        module = ModuleOp([func.FuncOp("forward", ([X, X], [X] * len(results)), Region(block))])
        module.verify()
        return module

    def topological_order(self, rng: random.Random | None) -> list[int]:
        done = {0, 1}
        order: list[int] = []
        pending = list(range(2, len(self.nodes)))
        while pending:
            ready = [i for i in pending if all(j in done for j in self.nodes[i].inputs)]
            pick = rng.choice(ready) if rng else ready[0]
            order.append(pick)
            done.add(pick)
            pending.remove(pick)
        return order


@st.composite
def specs(draw) -> Spec:
    n = draw(st.integers(2, 9))
    nodes = [Node("arg"), Node("arg")]
    for _ in range(n):
        kind = draw(st.sampled_from(UNARY + BINARY + ("softmax", "param")))
        earlier = st.integers(0, len(nodes) - 1)
        if kind == "param":
            nodes.append(Node(kind, [], draw(st.integers(0, 2))))
        elif kind in UNARY or kind == "softmax":
            nodes.append(Node(kind, [draw(earlier)], draw(st.integers(0, 1))))
        else:
            nodes.append(Node(kind, [draw(earlier), draw(earlier)]))
    ops = [i for i, node in enumerate(nodes) if node.kind not in ("arg", "param")] or [
        len(nodes) - 1
    ]
    outputs = draw(st.lists(st.sampled_from(ops), min_size=1, max_size=3))
    return Spec(nodes, outputs)


def run_spec(spec: Spec, rng: random.Random | None = None) -> tuple[str, list[torch.Tensor]]:
    module = spec.build(rng)
    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(6, 6, generator=gen) for _ in range(2)]
    # Every parameter gets one value: values are not part of the key, so a mutation may
    # only change the outputs through the structure.
    weight = torch.randn(6, 6, generator=gen)
    params = {
        op.opt("name"): weight
        for op in ir.kiln_ops(ir.entry_function(module))
        if op.name == "kiln.param"
    }
    return key(module), ir.run(module, *args, params=params)


@settings(max_examples=60, deadline=None)
@given(specs(), st.integers(0, 2**32))
def test_random_rewrites_keep_the_key(spec: Spec, seed: int):
    k0, out0 = run_spec(spec)
    k1, out1 = run_spec(spec, random.Random(seed))
    assert k0 == k1
    for a, b in zip(out0, out1, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)


def mutate(spec: Spec, rng: random.Random) -> Spec:
    nodes = [Node(n.kind, list(n.inputs), n.option) for n in spec.nodes]
    index = rng.randrange(2, len(nodes))
    node = nodes[index]
    what = rng.randrange(4)
    if node.kind == "param":
        node.option = (node.option + 1) % 3  # another weight
    elif what == 0 and node.kind in UNARY:
        node.kind = rng.choice([k for k in UNARY if k != node.kind])
    elif what == 0 and node.kind in BINARY:
        node.kind = rng.choice([k for k in BINARY if k != node.kind])
    elif what == 1 and node.kind == "softmax":
        node.option = 1 - node.option
    elif what == 2 and len(node.inputs) == 2:
        node.inputs.reverse()
    else:
        node.inputs[rng.randrange(len(node.inputs))] = rng.randrange(index)
    return Spec(nodes, list(spec.outputs))


@settings(max_examples=80, deadline=None)
@given(specs(), st.integers(0, 2**32))
def test_mutations_that_change_the_result_change_the_key(spec: Spec, seed: int):
    mutated = mutate(spec, random.Random(seed))
    k0, out0 = run_spec(spec)
    k1, out1 = run_spec(mutated)
    pairs = zip(out0, out1, strict=True)
    if any(not torch.allclose(a, b, rtol=0, atol=0, equal_nan=True) for a, b in pairs):
        assert k0 != k1
    if k0 == k1:  # one key: the same computation, written alike
        assert canonical_form(spec.build()) == canonical_form(mutated.build())


def test_canonical_form_is_json_and_complete():
    import json

    form = canonical_form(mlp().module)
    assert json.loads(json.dumps(form)) == form
    kinds = [entry[0][0] for entry in form["ops"]]
    assert sorted(kinds) == sorted(["kiln.param"] * 3 + ["kiln.linear", "kiln.gelu", "kiln.linear"])


def test_rejects_what_is_not_a_function():
    with pytest.raises(TypeError, match="kernel_key needs"):
        kernel_key("not ir", "llvm", {})  # type: ignore[arg-type]
    assert not is_kernel_key("ABC") and not is_kernel_key("0" * 63)


def test_colors_break_ties_that_one_sweep_leaves():
    """relu(w0) + relu(w1) beside w0 - w1: the relus differ only through their weights."""

    def build(first: str, relu_order: tuple[int, int]) -> ModuleOp:
        block = Block(arg_types=[X])
        w = {"a": ParamOp.of(f"{first}0", X), "b": ParamOp.of(f"{first}1", X)}
        relus = [UNARY_OPS["relu"].make(w["a"]), UNARY_OPS["relu"].make(w["b"])]
        ordered = [relus[i] for i in relu_order]
        add = BINARY_OPS["add"].make(*ordered)
        sub = BINARY_OPS["sub"].make(w["a"], w["b"])
        block.add_ops([w["b"], w["a"], *ordered, add, sub, func.ReturnOp(add, sub)])
        return ModuleOp([func.FuncOp("forward", ([X], [X, X]), Region(block))])

    keys = {key(build(name, order)) for name in ("w", "v") for order in ((0, 1), (1, 0))}
    assert len(keys) == 1
