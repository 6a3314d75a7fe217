"""`pipeline{stages=S microbatches=M mesh=N cluster=...}`: pipeline stage boundaries by dynamic programming.

Alpa's inter-operator pass, on Kiln's IR. The function is cut into layers at the points
where a single activation crosses (between transformer blocks, the residual stream), and
the layers are grouped into S contiguous stages, each on its own submesh of N / S devices,
minimizing the GPipe step time

    sum_s t_s + (M - 1) * max_s t_s

where t_s is stage s's time for one microbatch: its ops as the `shard` ILP plans them on
the submesh (one solve for the whole function, each op's cost and its incoming
redistributions then credited to its layer, so 24 identical blocks are priced once by
the tied classes rather than by one ILP per layer range), plus the send of the activation
at the cut. As in Alpa, the max is handled by enumerating its value: for each candidate
t_max (every distinct range time), a DP over (layers, stages) minimizes the sum with every
stage at most t_max. The baseline is the split into stages of equal layer counts.

Every op gets `kiln.stage`; the module gets the `kiln.pipeline` summary. A batch that the
microbatch count does not divide is refused (torch.distributed.pipelining silently returns
wrong rows there, ENVIRONMENT.md).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from cost_models import comm
from ir import dtypes
from ir.program import entry_function
from passes.registry import register_pass

SOURCES = ("kiln.param", "kiln.constant")


class PipelineStageError(ValueError):
    """Stages or microbatches that cannot work for this function; one line."""


@dataclass(frozen=True)
class Layer:
    first: int  # index into the function's ops
    last: int  # inclusive
    seconds: float  # one microbatch, on the stage's submesh
    out_bytes: int  # the activation crossing the cut after it (whole batch)


@register_pass
@dataclass(frozen=True)
class PipelinePass(ModulePass):
    name: ClassVar[str] = "pipeline"

    stages: int = 2
    microbatches: int = 4
    mesh: int = 0  # devices in all; 0: one per stage
    cluster: str = "gloo"
    time_limit: float = 10.0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from passes.shard import _as_attr

        fn = entry_function(op)
        summary, stage_of = decide_stages(fn, self.stages, self.microbatches, self.mesh or self.stages,
                                          self.cluster, self.time_limit)
        for i, o in enumerate(fn.body.block.ops):
            if not isinstance(o, func.ReturnOp):
                o.attributes["kiln.stage"] = IntegerAttr(stage_of[i], i64)
        op.attributes["kiln.pipeline"] = _as_attr(summary)


def decide_stages(fn: func.FuncOp, stages: int, microbatches: int, devices: int, cluster: str,
                  time_limit: float = 10.0) -> tuple[dict, list[int]]:
    start = time.perf_counter()
    if stages < 1 or microbatches < 1:
        raise PipelineStageError(f"pipeline: stages ({stages}) and microbatches ({microbatches}) must be >= 1")
    if devices % stages:
        raise PipelineStageError(f"pipeline: {devices} devices do not split into {stages} equal stage submeshes")
    args = list(fn.body.block.args)
    batch = dtypes.shape_of(args[0].type)[0] if args and dtypes.shape_of(args[0].type) else 1
    if batch % microbatches:
        raise PipelineStageError(
            f"pipeline: batch {batch} is not divisible by {microbatches} microbatches "
            "(torch.distributed.pipelining would silently return wrong rows)")
    sub = devices // stages
    c = comm.get_cluster(cluster)
    layers = split_layers(fn, sub, c, microbatches, time_limit)
    if len(layers) < stages:
        raise PipelineStageError(f"pipeline: the function has only {len(layers)} cut points for {stages} stages")
    link = c.axis_link((stages, sub), 0)
    send = [comm.send_recv(L.out_bytes / microbatches, link) for L in layers]
    cuts, best = _solve(layers, send, stages, microbatches)
    equal = [round(len(layers) * (s + 1) / stages) for s in range(stages - 1)]
    base = _step_time(layers, send, equal, microbatches)
    summary = {
        "stages": stages, "microbatches": microbatches, "devices_per_stage": sub, "cluster": c.name,
        "layers": len(layers), "cuts": ",".join(map(str, cuts)), "status": "optimal",
        "objective_us": best * 1e6, "equal_split_us": base * 1e6, "equal_split_cuts": ",".join(map(str, equal)),
        "stage_us": ",".join(f"{t * 1e6:.1f}" for t in _stage_times(layers, send, cuts)),
        "seconds": time.perf_counter() - start,
    }
    stage_of = [0] * len(list(fn.body.block.ops))
    bounds = [0, *cuts, len(layers)]
    for s in range(stages):
        for L in layers[bounds[s]:bounds[s + 1]]:
            for i in range(L.first, L.last + 1):
                stage_of[i] = s
    return summary, stage_of


def split_layers(fn: func.FuncOp, sub: int, cluster: comm.Cluster, microbatches: int,
                 time_limit: float) -> list[Layer]:
    """Cut after every op where exactly one op result is live (arguments and sources do not
    count: every stage has the inputs and evaluates the constants it uses); price each layer."""
    ops = [o for o in fn.body.block.ops if not isinstance(o, func.ReturnOp)]
    cost = _op_seconds(fn, sub, cluster, time_limit)
    index = {o: i for i, o in enumerate(ops)}
    last_use: dict = {}
    for i, o in enumerate(ops):
        for v in o.operands:
            last_use[v] = i
    for v in fn.body.block.ops.last.operands:  # returned values live to the end
        last_use[v] = len(ops)
    live: set = set()  # function arguments are not counted: every stage has the inputs
    layers, first = [], 0
    for i, o in enumerate(ops):
        if o.name not in SOURCES:
            live |= {r for r in o.results if r in last_use}
        live = {v for v in live if last_use[v] > i}
        if len(live) == 1 and i < len(ops) - 1 and o.name not in SOURCES:
            (v,) = live
            if v.owner in index:
                layers.append(Layer(first, i, sum(cost[first:i + 1]) / microbatches, dtypes.nbytes(v.type)))
                first = i + 1
    layers.append(Layer(first, len(ops) - 1, sum(cost[first:]) / microbatches, 0))
    return layers


def _op_seconds(fn: func.FuncOp, sub: int, cluster: comm.Cluster, time_limit: float) -> list[float]:
    """Each op's time (compute, its all-reduces, its incoming redistributions) under the shard plan."""
    from passes.shard.cost import CostTables
    from passes.shard.decide import decide
    from passes.shard.graph import build_graph

    graph = build_graph(fn, (sub,))
    tables = CostTables(graph, cluster.device, cluster)
    choice = decide(tables, "ilp" if sub > 1 else "replicate", None, time_limit).choice
    per_node = [tables.node_seconds[n.cls][choice[n.cls]] for n in graph.nodes]
    for u, v, k in graph.edges:
        src = graph.nodes[u].strategies[choice[graph.nodes[u].cls]].out
        dst = graph.nodes[v].strategies[choice[graph.nodes[v].cls]].ins[k]
        per_node[v] += tables.reshard(u, src, dst)[0]
    n_args = len(fn.body.block.args)
    return per_node[n_args:]


def _stage_times(layers: list[Layer], send: list[float], cuts: list[int]) -> list[float]:
    bounds = [0, *cuts, len(layers)]
    return [sum(L.seconds for L in layers[a:b]) + (send[b - 1] if b < len(layers) else 0.0)
            for a, b in itertools.pairwise(bounds)]


def _step_time(layers: list[Layer], send: list[float], cuts: list[int], m: int) -> float:
    t = _stage_times(layers, send, cuts)
    return sum(t) + (m - 1) * max(t)


def _solve(layers: list[Layer], send: list[float], stages: int, m: int) -> tuple[list[int], float]:
    """min over t_max of [DP: min sum of stage times, each <= t_max] + (m - 1) t_max."""
    n = len(layers)
    prefix = [0.0]
    for L in layers:
        prefix.append(prefix[-1] + L.seconds)

    def rng(a: int, b: int) -> float:  # layers a..b-1 as one stage, with the send after it
        return prefix[b] - prefix[a] + (send[b - 1] if b < n else 0.0)

    candidates = sorted({rng(a, b) for a in range(n) for b in range(a + 1, n + 1)})
    best, best_cuts = math.inf, list(range(1, stages))
    for t_max in candidates:
        if (m - 1) * t_max >= best:
            break  # larger t_max only adds more
        # f[s][b]: least sum for layers 0..b-1 in s stages, each <= t_max
        f = [[math.inf] * (n + 1) for _ in range(stages + 1)]
        arg = [[-1] * (n + 1) for _ in range(stages + 1)]
        f[0][0] = 0.0
        for s in range(1, stages + 1):
            for b in range(s, n + 1):
                for a in range(s - 1, b):
                    t = rng(a, b)
                    if t <= t_max and f[s - 1][a] + t < f[s][b]:
                        f[s][b], arg[s][b] = f[s - 1][a] + t, a
        if f[stages][n] + (m - 1) * t_max < best:
            best = f[stages][n] + (m - 1) * t_max
            cuts, b = [], n
            for s in range(stages, 0, -1):
                b = arg[s][b]
                cuts.append(b)
            best_cuts = sorted(cuts)[1:]
    return best_cuts, best
