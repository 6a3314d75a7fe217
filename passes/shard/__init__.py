"""`shard{mesh=4|2x2 memory-gb=G time-limit=S solver=ilp|megatron|data-parallel|replicate cluster=gloo}`.

Alpa-style intra-operator parallelism: every op gets a strategy on the device mesh
(`strategies.py`), structurally identical layers share one decision (`graph.py`), the
choice is an ILP over compute, all-reduces and redistributions (`ilp.py`, priced by
`cost.py` and `cost_models/comm.py`), and the baselines (`baselines.py`) are always
solved and reported beside it (`decide.py`).

The decision is written on the IR: every op carries `kiln.placement` (its result's
placement, e.g. `"[shard(0), replicate]"`), `kiln.operand_placements` (what it needs of
each operand, `;`-separated) and, for a contraction split along its reduced dim,
`kiln.all_reduce` (the mesh axes); the function carries `kiln.arg_placements` and
`kiln.mesh`; the module carries the `kiln.shard` summary. The runtime
(`compiler/distributed/shard_runtime.py`) reads exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import (
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    f64,
    i64,
)
from xdsl.passes import ModulePass

from cost_models.comm import get_cluster
from ir.program import entry_function
from passes.registry import register_pass
from passes.shard.cost import CostTables
from passes.shard.decide import SOLVERS, Plan, ShardError, decide
from passes.shard.graph import ShardGraph, build_graph
from passes.shard.placement import text

__all__ = ["ShardError", "ShardPass", "parse_mesh_option", "plan_function"]


def parse_mesh_option(mesh: str | int) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in str(mesh).lower().split("x"))
    except ValueError:
        raise ShardError(f"shard: mesh must look like 4 or 2x2, got {mesh!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ShardError(f"shard: mesh sizes must be positive, got {mesh!r}")
    return shape


@register_pass
@dataclass(frozen=True)
class ShardPass(ModulePass):
    name: ClassVar[str] = "shard"

    mesh: str | int = "2"
    memory_gb: float | None = None
    time_limit: float = 10.0
    solver: str = "ilp"
    cluster: str = "gloo"
    tie: bool = True

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ShardError(f"shard: unknown solver {self.solver!r}; use one of {', '.join(SOLVERS)}")
        if self.time_limit <= 0:
            raise ShardError(f"shard: time-limit must be > 0 seconds, got {self.time_limit}")
        if self.memory_gb is not None and self.memory_gb <= 0:
            raise ShardError(f"shard: memory-gb must be > 0, got {self.memory_gb}")
        parse_mesh_option(self.mesh)
        try:
            get_cluster(self.cluster)
        except ValueError as err:
            raise ShardError(f"shard: {err}") from None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        graph, plan = plan_function(op, parse_mesh_option(self.mesh), self.solver, self.memory_gb,
                                    self.time_limit, self.cluster, self.tie)
        write_plan(graph, plan)
        op.attributes["kiln.shard"] = _as_attr(plan.summary)


def plan_function(module: ModuleOp, mesh: tuple[int, ...], solver: str = "ilp", memory_gb: float | None = None,
                  time_limit: float = 10.0, cluster: str = "gloo", tie: bool = True) -> tuple[ShardGraph, Plan]:
    c = get_cluster(cluster)
    graph = build_graph(entry_function(module), mesh, tie)
    tables = CostTables(graph, c.device, c)
    return graph, decide(tables, solver, None if memory_gb is None else memory_gb * 1e9, time_limit)


def write_plan(graph: ShardGraph, plan: Plan) -> None:
    args = []
    for node in graph.nodes:
        st = node.strategies[plan.choice[node.cls]]
        if node.op is None:
            args.append(text(st.out))
            continue
        node.op.attributes["kiln.placement"] = StringAttr(text(st.out))
        if st.ins:
            node.op.attributes["kiln.operand_placements"] = StringAttr(";".join(text(p) for p in st.ins))
        if st.reduce_axes:
            node.op.attributes["kiln.all_reduce"] = StringAttr(",".join(map(str, st.reduce_axes)))
    graph.fn.attributes["kiln.arg_placements"] = StringAttr(";".join(args))
    graph.fn.attributes["kiln.mesh"] = StringAttr("x".join(map(str, graph.mesh)))


def _as_attr(summary: dict) -> DictionaryAttr:
    def attr(v):
        if isinstance(v, str):
            return StringAttr(v)
        if isinstance(v, int):
            return IntegerAttr(v, i64)
        return FloatAttr(float(v), f64)

    return DictionaryAttr({k: attr(v) for k, v in summary.items()})
