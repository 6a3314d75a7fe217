"""The plans every sharding decision is compared with: replicate, data parallel, Megatron.

Each baseline is a rule that forbids strategies; what the rule leaves open (how to glue
the rule's ops together) is solved by the same ILP, so a baseline is the best plan the
rule allows, priced by the same cost model.

- replicate: every op runs whole on every device (no communication, no saving).
- data-parallel: parameters replicated, every value split along its dim 0 (the batch)
  on every mesh axis where that divides, or replicated; no partial sums.
- megatron: the last mesh axis is tensor-parallel by Megatron-LM's rules on weight names:
  q/k/v/gate/up/fc1 projections column-parallel (weight split on its output dim),
  out/down/fc2 row-parallel (split on its input dim, one all-reduce), any other linear
  replicated on that axis; the other mesh axes are data parallel.
"""

from __future__ import annotations

import re

from passes.shard.graph import ShardGraph
from passes.shard.strategies import SOURCES, Strategy

BASELINES = ("replicate", "data-parallel", "megatron")
COLUMN = re.compile(r"(^|_)(q|k|v|query|key|value|gate|up|fc1|w1|w3|c_fc|in_proj|wq|wk|wv)_weight$")
ROW = re.compile(r"(^|_)(out|o|o_proj|down|fc2|w2|c_proj|out_proj|dense|wo)_weight$")


def allowed(graph: ShardGraph, rule: str) -> list[set[int]]:
    """For each class, the strategy indices `rule` permits."""
    out = []
    for members in graph.classes:
        node = graph.nodes[members[0]]
        kind = "source" if node.op is None or node.op.name in SOURCES else "op"
        if node.op is None:
            kind = "arg"
        linear_rule = _linear_rule(graph, members[0]) if rule == "megatron" else None
        ok = {s for s, st in enumerate(node.strategies) if _permits(rule, kind, st, graph.mesh, linear_rule)}
        out.append(ok)
    return out


def _permits(rule: str, kind: str, st: Strategy, mesh: tuple[int, ...], linear: str | None) -> bool:
    places = (st.out, *st.ins)
    if rule == "replicate":
        return all(d < 0 for p in places for d in p) and not st.reduce_axes
    dp_axes = range(len(mesh)) if rule == "data-parallel" else range(len(mesh) - 1)
    for a in dp_axes:
        if a in st.reduce_axes or any(p[a] not in (-1, 0) for p in places):
            return False
        if kind == "source" and st.out[a] >= 0:
            return False
    if rule == "data-parallel":
        return True
    tp = len(mesh) - 1
    if linear is None:
        return True
    w = st.ins[1][tp]
    if linear == "column":
        return w == 0 and tp not in st.reduce_axes
    if linear == "row":
        return w == 1 and tp in st.reduce_axes
    return w < 0 and st.ins[0][tp] < 0 and tp not in st.reduce_axes


def _linear_rule(graph: ShardGraph, index: int) -> str | None:
    """column / row / replicate for a linear (by its weight's name); None for other ops."""
    op = graph.nodes[index].op
    if op is None or op.name != "kiln.linear":
        return None
    owner = op.operands[1].owner
    name = str(owner.opt("name")) if getattr(owner, "name", "") == "kiln.param" else ""
    if COLUMN.search(name):
        return "column"
    if ROW.search(name):
        return "row"
    return "replicate"
