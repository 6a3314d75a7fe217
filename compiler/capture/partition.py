"""Split an aten graph into kiln-compilable partitions and eager leftovers.

1. Fold: every node that depends only on bound tensors (parameters, buffers, constants
   made inside forward such as `ones(..).tril()`) is evaluated once, now.
2. Trial-convert the whole graph: a node is supported when its converter succeeds.
3. Level partitioning: a supported node's level is one more than the highest level of
   any unsupported node it depends on. Supported nodes of one level form one partition;
   this is convex by construction (a path out of a partition through an eager node and
   back in would raise the level), so each partition can run as a single call.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx

from compiler.capture.convert import convert_nodes
from compiler.capture.errors import Unsupported
from compiler.capture.frontends import AtenGraph
from compiler.capture.lowering import op_name

# Ops that mark shapes or assert metadata and compute nothing.
IGNORED = {torch.ops.aten._assert_tensor_metadata.default, torch.ops.aten._assert_scalar.default}


@dataclass
class PartitionPlan:
    compute: list[torch.fx.Node]  # call_function nodes in topological order
    consts: dict[torch.fx.Node, torch.Tensor]
    levels: dict[torch.fx.Node, int]
    supported: set[torch.fx.Node]
    failures: dict[torch.fx.Node, Unsupported]

    def partitions(self) -> list[list[torch.fx.Node]]:
        by_level: dict[int, list[torch.fx.Node]] = {}
        for node in self.compute:
            if node in self.supported:
                by_level.setdefault(self.levels[node], []).append(node)
        return [by_level[k] for k in sorted(by_level)]

    def eager_nodes(self) -> list[torch.fx.Node]:
        return [n for n in self.compute if n not in self.supported]

    def fallback_counts(self) -> list[dict[str, object]]:
        counts = Counter(op_name(n) for n in self.eager_nodes())
        return [{"op": op, "count": c} for op, c in sorted(counts.items())]


def plan_partitions(graph: AtenGraph) -> PartitionPlan:
    folded = _fold(graph)
    # Tensor-valued folds become params; a folded list (chunk/split of a weight) is only
    # read through its folded getitems, so it is neither compute nor a partition output.
    consts = {n: v for n, v in folded.items() if isinstance(v, torch.Tensor)}
    compute = [
        n for n in graph.graph.nodes
        if n.op == "call_function" and n not in folded and n.target not in IGNORED
    ]
    trial = convert_nodes(compute, consts, outputs=[], trial=True)
    failures = trial.failures
    supported = {n for n in compute if n not in failures}
    levels: dict[torch.fx.Node, int] = {}
    for node in compute:
        level = 0
        for dep in node.all_input_nodes:
            if dep in levels:
                bump = 1 if (dep not in supported and node in supported) else 0
                level = max(level, levels[dep] + bump)
        levels[node] = level
    return PartitionPlan(compute, consts, levels, supported, failures)


def _fold(graph: AtenGraph) -> dict[torch.fx.Node, object]:
    """Values of placeholders bound at compile time and of nodes computed only from them."""
    consts: dict[torch.fx.Node, object] = {}
    for node in graph.graph.nodes:
        if node.op == "placeholder" and node.name in graph.consts:
            consts[node] = graph.consts[node.name]
        elif node.op == "call_function" and _foldable(node, consts):
            args = torch.fx.node.map_arg(node.args, lambda n: consts[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: consts[n])
            with torch.no_grad():
                consts[node] = node.target(*args, **kwargs)
    return consts


def _foldable(node: torch.fx.Node, consts: dict) -> bool:
    if node.target in IGNORED or not all(d in consts for d in node.all_input_nodes):
        return False
    if node.target is operator.getitem:
        return True
    tags = getattr(node.target, "tags", ())
    return torch.Tag.nondeterministic_seeded not in tags
