"""The Inductor-style greedy baseline (`passes/fusion_greedy.py`) merges where the merge is obvious.

Every "ILP vs greedy" figure compares against this baseline, so a crippled greedy (one that
never merges, merges only once, ignores the validity rules or takes the smallest saving
first) would flatter the solver. These graphs are small enough that the right greedy answer
is known by hand: the tests assert the exact groups.
"""

from __future__ import annotations

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

import ir
from cost_models.hardware import get_hardware
from ir import dtypes
from ir.ops.contraction import LinearOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.reduction import ReduceOp
from ir.ops.sources import ParamOp
from passes.fusion import decide
from passes.fusion_graph import FusionGraph
from passes.fusion_greedy import greedy_groups
from passes.fusion_groups import FusionRules

ROWS, WIDTH = 64, 256  # large enough that every op is memory-bound on the CPU roofline


class Builder:
    """Appends kiln ops to one block; `ops` records them in program order (FusionGraph's indices)."""

    def __init__(self) -> None:
        self.x_type = dtypes.tensor_type((ROWS, WIDTH), torch.float32)
        self.block = Block(arg_types=[self.x_type])
        self.x = self.block.args[0]
        self.count = 0

    def add(self, op):
        self.block.add_op(op)
        if op.name != "kiln.param":
            self.count += 1
        return op.results[0]

    def unary(self, name: str, v):
        return self.add(UNARY_OPS[name].make(v))

    def binary(self, name: str, a, b):
        return self.add(BINARY_OPS[name].make(a, b))

    def sum(self, v):
        return self.add(ReduceOp.make(v, kind="sum", dims=(1,), keepdim=True))

    def linear(self, v):
        weight = self.add(ParamOp.of("w", dtypes.tensor_type((WIDTH, WIDTH), torch.float32)))
        return self.add(LinearOp.make(v, weight))

    def graph(self, *outs) -> FusionGraph:
        self.block.add_op(func.ReturnOp(*outs))
        fn = func.FuncOp("forward", ([self.x_type], [v.type for v in outs]), Region(self.block))
        program = ir.Program(ModuleOp([fn]), {"w": torch.zeros(WIDTH, WIDTH)})
        graph = FusionGraph.build(program.forward, get_hardware("cpu"))
        assert len(graph) == self.count
        return graph


def groups(graph: FusionGraph, rules: FusionRules = FusionRules()) -> list[set[int]]:
    return [set(g) for g in greedy_groups(graph, rules)]


def test_elementwise_chain_is_one_group():
    b = Builder()
    v = b.unary("relu", b.x)  # 0
    v = b.unary("exp", v)  # 1
    v = b.unary("tanh", v)  # 2
    v = b.binary("mul", v, b.x)  # 3
    v = b.unary("sigmoid", v)  # 4
    graph = b.graph(v)
    assert groups(graph) == [{0, 1, 2, 3, 4}]
    s = decide(graph, FusionRules(), "greedy", time_limit=5.0).summary
    assert s["kernels_greedy"] == 1 and s["kernels_none"] == 5
    assert s["time_us_greedy"] < s["time_us_none"] / 3  # 5 launches and 4 round trips saved


def test_reduction_takes_its_elementwise_prologue_and_epilogue():
    b = Builder()
    e = b.unary("exp", b.x)  # 0
    m = b.binary("mul", e, b.x)  # 1
    s = b.sum(m)  # 2
    out = b.unary("sqrt", s)  # 3
    graph = b.graph(out)
    assert groups(graph) == [{0, 1, 2, 3}]


def test_two_reductions_merge_only_when_the_rules_allow():
    """A hand-written rms-norm-like block: x*x -> sum -> rsqrt -> x*r -> sum."""
    b = Builder()
    sq = b.binary("mul", b.x, b.x)  # 0
    s1 = b.sum(sq)  # 1
    r = b.unary("rsqrt", s1)  # 2
    y = b.binary("mul", b.x, r)  # 3
    s2 = b.sum(y)  # 4
    graph = b.graph(s2)
    assert groups(graph) == [{0, 1, 2, 3, 4}]
    split = groups(graph, FusionRules(multi_reduction=False))
    assert len(split) == 2 and sorted(map(len, split)) == [2, 3]
    assert all(sum(graph.kinds[i] == "reduction" for i in g) == 1 for g in split)
    assert {0, 1} in split or {0, 1, 2} in split  # the first reduction keeps its prologue


def test_contraction_stays_alone_unless_epilogues_are_allowed():
    b = Builder()
    v = b.unary("relu", b.x)  # 0
    v = b.unary("exp", v)  # 1
    v = b.linear(v)  # 2
    v = b.unary("tanh", v)  # 3
    v = b.unary("sigmoid", v)  # 4
    graph = b.graph(v)
    assert groups(graph) == [{0, 1}, {2}, {3, 4}]
    # A Triton-style GEMM takes its epilogue but never a prologue.
    assert groups(graph, FusionRules(fuse_contractions=True)) == [{0, 1}, {2, 3, 4}]


def test_greedy_takes_the_largest_saving_first():
    """exp -> sum -> relu with room for pairs only: fusing exp into the sum spares a full
    (ROWS, WIDTH) round trip, fusing relu into it only a (ROWS, 1) one. Greedy must take
    the big one; the small one is then blocked by max_group."""
    b = Builder()
    e = b.unary("exp", b.x)  # 0
    s = b.sum(e)  # 1
    r = b.unary("relu", s)  # 2
    graph = b.graph(r)
    assert groups(graph, FusionRules(max_group=2)) == [{0, 1}, {2}]
    assert groups(graph) == [{0, 1, 2}]


def test_greedy_respects_convexity():
    """a = relu(x); b = linear(a); c = a + b. {a, c} would be a kernel that feeds the
    linear and waits for it: not convex, so greedy must not form it."""
    b = Builder()
    a = b.unary("relu", b.x)  # 0
    lin = b.linear(a)  # 1
    c = b.binary("add", a, lin)  # 2
    graph = b.graph(c)
    assert groups(graph) == [{0}, {1}, {2}]
