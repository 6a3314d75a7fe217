"""The networkx view of a function: ops are nodes, SSA uses are edges.

Graph analyses (topological order, convexity checks for fusion, lifetimes,
partitioning, hashing) run on this view and write results back to the IR as attributes.
"""

from __future__ import annotations

import networkx as nx
from xdsl.dialects import func
from xdsl.ir import Operation


def to_networkx(fn: func.FuncOp) -> nx.DiGraph:
    """DiGraph whose nodes are the body's ops (in program order, key = index).

    Node attributes: `op` (the Operation) and `name` (e.g. "kiln.linear"). Edge (u, v)
    means v uses a result of u; the `operands` attribute lists which operand slots.
    Block arguments are nodes too (`name="arg"`, key = "arg<i>").
    """
    graph = nx.DiGraph()
    block = fn.body.block
    index_of: dict[Operation, int] = {}
    for i, arg in enumerate(block.args):
        graph.add_node(f"arg{i}", op=None, name="arg", value=arg)
    for i, op in enumerate(block.ops):
        index_of[op] = i
        graph.add_node(i, op=op, name=op.name)
        for slot, operand in enumerate(op.operands):
            owner = operand.owner
            src = index_of[owner] if isinstance(owner, Operation) else f"arg{operand.index}"  # type: ignore[attr-defined]
            if graph.has_edge(src, i):
                graph.edges[src, i]["operands"].append(slot)
            else:
                graph.add_edge(src, i, operands=[slot])
    return graph


def op_nodes(graph: nx.DiGraph) -> list[int]:
    """Op node keys in a topological order (program order is one)."""
    return [n for n in nx.topological_sort(graph) if isinstance(n, int)]
