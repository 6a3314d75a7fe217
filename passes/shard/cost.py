"""Modeled cost of a sharding plan: step time, bytes each device sends, memory per device.

One `CostTables` per (graph, hardware, cluster) prices every strategy and every
redistribution once; the ILP reads its coefficients from here and `evaluate` prices a
finished plan (the ILP's, or a baseline's) from the same numbers, so the report compares
like with like. Time is the sum of the local roofline times and the collectives (no
overlap of compute and communication is assumed, as in Alpa's intra-op model).
Memory per device is the local parameters plus the largest local activation, twice
(an op's input and output live together); forward-only, so nothing else is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from cost_models import comm
from cost_models.hardware import Hardware
from passes.shard.graph import ShardGraph
from passes.shard.placement import Placement, replicated, reshard_cost, reshard_steps
from passes.shard.strategies import compute_seconds, local_bytes, reduce_cost


@dataclass
class CostTables:
    graph: ShardGraph
    hw: Hardware
    cluster: comm.Cluster
    node_seconds: list[list[float]] = field(default_factory=list)  # class -> strategy -> s
    node_bytes: list[list[float]] = field(default_factory=list)
    out_bytes: list[list[float]] = field(default_factory=list)  # local bytes of the result
    node_comm: list[list[float]] = field(default_factory=list)  # the all-reduce part of node_seconds

    def __post_init__(self) -> None:
        g, mesh = self.graph, self.graph.mesh
        for members in g.classes:
            node = g.nodes[members[0]]
            secs, sent, outb, reduce_s = [], [], [], []
            for s in node.strategies:
                t = 0.0 if node.op is None else compute_seconds(node.op, s, mesh, self.hw)
                r = (0.0, 0.0) if node.op is None else reduce_cost(node.op, s, mesh, self.cluster)
                secs.append(t + r[0])
                sent.append(r[1])
                reduce_s.append(r[0])
                outb.append(local_bytes(node.value, s.out, mesh))
            self.node_seconds.append(secs)
            self.node_bytes.append(sent)
            self.out_bytes.append(outb)
            self.node_comm.append(reduce_s)
        self._reshard = lru_cache(maxsize=None)(self._reshard_uncached)

    def reshard(self, node: int, src: Placement, dst: Placement) -> tuple[float, float]:
        g = self.graph
        return self._reshard(g.shape(node), g.nbytes(node), src, dst)

    def _reshard_uncached(self, shape, nbytes, src, dst) -> tuple[float, float]:
        return reshard_cost(src, dst, shape, self.graph.mesh, nbytes, self.cluster)

    def is_param(self, cls: int) -> bool:
        node = self.graph.nodes[self.graph.classes[cls][0]]
        return node.op is not None and node.op.name in ("kiln.param", "kiln.constant")


def evaluate(t: CostTables, choice: list[int]) -> dict[str, float]:
    """Time, bytes sent and memory per device of a plan (one strategy index per class)."""
    g = t.graph
    compute = comm_s = sent = params = peak = 0.0
    collectives = 0
    for c, members in enumerate(g.classes):
        s = choice[c]
        strategy = g.nodes[members[0]].strategies[s]
        compute += len(members) * (t.node_seconds[c][s] - t.node_comm[c][s])
        comm_s += len(members) * t.node_comm[c][s]
        sent += len(members) * t.node_bytes[c][s]
        collectives += len(members) * len(strategy.reduce_axes)
        if t.is_param(c):
            params += len(members) * t.out_bytes[c][s]
        else:
            peak = max(peak, t.out_bytes[c][s])
    for u, v, k in g.edges:
        src = g.nodes[u].strategies[choice[g.nodes[u].cls]].out
        dst = g.nodes[v].strategies[choice[g.nodes[v].cls]].ins[k]
        secs, b = t.reshard(u, src, dst)
        comm_s += secs
        sent += b
        collectives += _count(g, u, src, dst)
    for u in g.returns:
        src = g.nodes[u].strategies[choice[g.nodes[u].cls]].out
        secs, b = t.reshard(u, src, replicated(g.mesh))
        comm_s += secs
        sent += b
        collectives += _count(g, u, src, replicated(g.mesh))
    return {
        "time_us": (compute + comm_s) * 1e6,
        "comm_us": comm_s * 1e6,
        "comm_mb": sent / 1e6,
        "memory_mb": (params + 2 * peak) / 1e6,
        "params_mb": params / 1e6,
        "collectives": collectives,
    }


def _count(g: ShardGraph, u: int, src: Placement, dst: Placement) -> int:
    steps = reshard_steps(src, dst, g.shape(u), g.mesh, g.nbytes(u))
    return sum(1 for s in steps if s.kind != "slice")
