"""The sharding problem of one function: nodes with strategies, edges, and tied layer classes.

Nodes are the function's arguments and its kiln ops; an edge is one use of a value by an
op (or by the return, which wants every output replicated). Structurally identical ops
(same kind, attributes and types, and the same neighbourhood three hops out, by
Weisfeiler-Lehman hashing) form one class and share one decision, so the 24 blocks of a
24-layer GPT cost the solver about as much as one: a class's costs are counted once per
member (its multiplicity), an edge class once per edge it stands for.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from ir import dtypes
from passes.shard.placement import all_placements
from passes.shard.strategies import Strategy, enumerate_strategies

WL_ROUNDS = 3


@dataclass
class Node:
    index: int
    op: Operation | None  # None for a function argument
    value: SSAValue  # the node's (first) result
    strategies: list[Strategy]
    cls: int = -1

    @property
    def name(self) -> str:
        return "arg" if self.op is None else self.op.name

    def param_name(self) -> str | None:
        if self.op is not None and self.op.name == "kiln.param":
            return str(self.op.opt("name"))  # type: ignore[attr-defined]
        return None


@dataclass
class ShardGraph:
    fn: func.FuncOp
    mesh: tuple[int, ...]
    nodes: list[Node]
    edges: list[tuple[int, int, int]]  # (producer node, consumer node, operand index)
    returns: list[int]  # producer nodes of the returned values
    classes: list[list[int]] = field(default_factory=list)

    def shape(self, node: int) -> tuple[int, ...]:
        return dtypes.shape_of(self.nodes[node].value.type)

    def nbytes(self, node: int) -> int:
        return dtypes.nbytes(self.nodes[node].value.type)

    def strategies(self, cls: int) -> list[Strategy]:
        return self.nodes[self.classes[cls][0]].strategies

    def edge_classes(self) -> dict[tuple[int, int, int], list[tuple[int, int, int]]]:
        out: dict[tuple[int, int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for u, v, k in self.edges:
            out[(self.nodes[u].cls, self.nodes[v].cls, k)].append((u, v, k))
        return out

    def return_classes(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for u in self.returns:
            out[self.nodes[u].cls].append(u)
        return out


def build_graph(fn: func.FuncOp, mesh: tuple[int, ...], tie: bool = True) -> ShardGraph:
    nodes: list[Node] = []
    of_value: dict[SSAValue, int] = {}
    for arg in fn.body.block.args:
        node = Node(len(nodes), None, arg, [Strategy(p, ()) for p in all_placements(dtypes.shape_of(arg.type), mesh)])
        of_value[arg] = node.index
        nodes.append(node)
    edges: list[tuple[int, int, int]] = []
    returns: list[int] = []
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            returns = [of_value[v] for v in op.operands]
            continue
        if not op.name.startswith("kiln."):
            raise ValueError(f"shard: op {op.name} is not a kiln op; run shard on captured kiln IR")
        if not op.results:
            raise ValueError(f"shard: {op.name} has no result; only value-producing ops are planned")
        # An op with several results (top-k) runs replicated, so one placement covers them all.
        node = Node(len(nodes), op, op.results[0], enumerate_strategies(op, mesh))
        for k, operand in enumerate(op.operands):
            edges.append((of_value[operand], node.index, k))
        for r in op.results:
            of_value[r] = node.index
        nodes.append(node)
    graph = ShardGraph(fn, mesh, nodes, edges, returns)
    _tie(graph, tie)
    return graph


def _local_signature(node: Node) -> str:
    if node.op is None:
        return f"arg:{node.value.type}"
    props = {k: str(v) for k, v in node.op.properties.items() if not (node.op.name == "kiln.param" and k == "name")}
    if node.op.name == "kiln.constant":
        props.pop("value", None)
    operands = ",".join(str(o.type) for o in node.op.operands)
    return f"{node.op.name}|{sorted(props.items())}|{operands}|{node.value.type}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _tie(graph: ShardGraph, tie: bool) -> None:
    """Weisfeiler-Lehman colour refinement; nodes of equal final colour form a class."""
    if not tie:
        graph.classes = [[n.index] for n in graph.nodes]
        for n in graph.nodes:
            n.cls = n.index
        return
    colour = [_digest(_local_signature(n)) for n in graph.nodes]
    preds: dict[int, list[tuple[int, int]]] = defaultdict(list)
    succs: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for u, v, k in graph.edges:
        preds[v].append((k, u))
        succs[u].append((k, v))
    ret = set(graph.returns)
    for _ in range(WL_ROUNDS):
        colour = [
            _digest(colour[i] + "|" + ",".join(f"{k}:{colour[u]}" for k, u in sorted(preds[i]))
                    + "|" + ",".join(sorted(f"{k}:{colour[v]}" for k, v in succs[i])) + ("|ret" if i in ret else ""))
            for i in range(len(graph.nodes))
        ]
    first: dict[str, int] = {}
    graph.classes = []
    for n in graph.nodes:
        if colour[n.index] not in first:
            first[colour[n.index]] = len(graph.classes)
            graph.classes.append([])
        n.cls = first[colour[n.index]]
        graph.classes[n.cls].append(n.index)
