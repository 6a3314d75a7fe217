"""The networkx view of a function: nodes, edges, and topological order."""

from __future__ import annotations

import networkx as nx
import torch
from ir_builders import function_of

import ir
from ir import dtypes
from ir.graph import op_nodes
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.moe import TopkOp
from ir.ops.sources import ParamOp

X = dtypes.tensor_type((4, 8), torch.float32)


def chain():
    def body(args):
        a = UNARY_OPS["relu"].make(args[0])
        b = UNARY_OPS["exp"].make(a)
        c = UNARY_OPS["neg"].make(b)
        return [a, b, c], [c.result]

    return function_of([X], body)[1]


def diamond():
    def body(args):
        left = UNARY_OPS["relu"].make(args[0])
        right = UNARY_OPS["exp"].make(args[0])
        join = BINARY_OPS["add"].make(left, right)
        return [left, right, join], [join.result]

    return function_of([X], body)[1]


def test_chain_nodes_and_edges():
    graph = ir.to_networkx(chain())
    assert graph.number_of_nodes() == 1 + 4  # arg0, three ops, func.return
    assert graph.number_of_edges() == 4
    assert list(graph.edges) == [("arg0", 0), (0, 1), (1, 2), (2, 3)]
    assert [graph.nodes[n]["name"] for n in range(4)] == [
        "kiln.relu",
        "kiln.exp",
        "kiln.neg",
        "func.return",
    ]
    assert graph.nodes["arg0"]["name"] == "arg"


def test_chain_topological_order_is_program_order():
    fn = chain()
    graph = ir.to_networkx(fn)
    assert op_nodes(graph) == list(range(len(fn.body.block.ops)))
    assert [graph.nodes[n]["op"] for n in op_nodes(graph)] == list(fn.body.block.ops)


def test_diamond():
    graph = ir.to_networkx(diamond())
    assert graph.number_of_nodes() == 5
    assert set(graph.edges) == {("arg0", 0), ("arg0", 1), (0, 2), (1, 2), (2, 3)}
    assert graph.in_degree(2) == 2 and graph.out_degree("arg0") == 2
    assert graph.edges[0, 2]["operands"] == [0] and graph.edges[1, 2]["operands"] == [1]
    order = op_nodes(graph)
    assert order[-2:] == [2, 3] and set(order[:2]) == {0, 1}
    assert nx.is_directed_acyclic_graph(graph)


def test_value_used_twice_is_one_edge_with_both_slots():
    def body(args):
        sq = BINARY_OPS["mul"].make(args[0], args[0])
        return [sq], [sq.result]

    graph = ir.to_networkx(function_of([X], body)[1])
    assert graph.number_of_edges() == 2
    assert graph.edges["arg0", 0]["operands"] == [0, 1]


def test_multi_result_op_and_params():
    def body(args):
        w = ParamOp.of("w", X)
        mixed = BINARY_OPS["add"].make(args[0], w)
        top = TopkOp.make(mixed, k=2, dim=-1, largest=True)
        idx = UNARY_OPS["neg"].make(top.values)
        return [w, mixed, top, idx], [idx.result, top.indices]

    graph = ir.to_networkx(function_of([X], body)[1])
    assert graph.in_degree(0) == 0, "a param has no producers"
    assert set(graph.successors(2)) == {3, 4}, "topk feeds neg (values) and return (indices)"
    assert graph.edges[2, 4]["operands"] == [1]
    assert op_nodes(graph) == [0, 1, 2, 3, 4]
