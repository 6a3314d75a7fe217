"""One rank of a sharded plan: local shards, local ops, and the collectives the plan names.

Each rank parses the planned IR and cuts it into local programs (`local_program.py`):
runs of ops on this rank's shards, with local shapes, built by a Kiln backend (`tvm` by
default, `eager` = the reference interpreter) through that backend's own pipeline and
build. Between them stay the collectives: an operand whose placement differs from the
one its op's strategy wants (`kiln.operand_placements`) is redistributed by executing
`reshard_steps`, the same steps the cost model priced (all_gather / all_to_all_single
on the mesh axis's process group), and a contraction split along its reduced dim
all-reduces on the axes in `kiln.all_reduce` before its bias add.

Why explicit collectives rather than DTensor: the plan already names every collective,
so issuing exactly those keeps the count checkable (predicted == issued by construction
of one step list) and keeps the runtime independent of DTensor's own sharding
propagation, which would pick its own redistributions, and keeps the local programs
plain kiln IR that any backend builds.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections import Counter
from typing import Any

import torch
import torch.distributed as dist

from compiler.distributed.launch import RankContext
from compiler.distributed.local_program import LocalPlan, Segment
from cost_models import comm
from passes.shard.placement import Placement, reshard_steps


class Mesh:
    """This rank's coordinates and one process group per mesh axis (ranks row-major)."""

    def __init__(self, shape: tuple[int, ...], rank: int) -> None:
        self.shape = shape
        self.coords = _unravel(rank, shape)
        self.groups: list[Any] = []
        for axis in range(len(shape)):
            if len(shape) == 1:
                self.groups.append(None)  # the default (world) group
                continue
            mine = None
            others = [range(s) for a, s in enumerate(shape) if a != axis]
            for rest in itertools.product(*others):  # every rank creates every group, in one order
                ranks = []
                for i in range(shape[axis]):
                    c = list(rest)
                    c.insert(axis, i)
                    ranks.append(_ravel(tuple(c), shape))
                group = dist.new_group(ranks)
                if rank in ranks:
                    mine = group
            self.groups.append(mine)


class SubMesh:
    """The mesh axes after the first (a pipeline stage's submesh) of a `Mesh`, with its groups."""

    def __init__(self, full: Mesh) -> None:
        self.shape, self.coords, self.groups = full.shape[1:], full.coords[1:], full.groups[1:]


def _unravel(rank: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for s in reversed(shape):
        out.append(rank % s)
        rank //= s
    return tuple(reversed(out))


def _ravel(coords: tuple[int, ...], shape: tuple[int, ...]) -> int:
    r = 0
    for c, s in zip(coords, shape):
        r = r * s + c
    return r


class Collectives:
    """Issues collectives on mesh axes and counts them (kind -> calls, and bytes sent)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.calls: Counter[str] = Counter()
        self.sent = 0.0  # bytes this rank sends, by the same formulas the cost model uses

    def _count(self, kind: str, nbytes: float, axis: int) -> None:
        self.calls[kind] += 1
        self.sent += comm.wire_bytes(kind, nbytes, self.mesh.shape[axis])

    def all_gather(self, x: torch.Tensor, axis: int, dim: int) -> torch.Tensor:
        m = self.mesh.shape[axis]
        parts = [torch.empty_like(x) for _ in range(m)]
        dist.all_gather(parts, x.contiguous(), group=self.mesh.groups[axis])
        self._count("all_gather", x.numel() * x.element_size() * m, axis)
        return torch.cat(parts, dim=dim)

    def all_to_all(self, x: torch.Tensor, axis: int, whole: int, split: int) -> torch.Tensor:
        m = self.mesh.shape[axis]
        chunks = [c.contiguous() for c in x.chunk(m, dim=split)]
        send = torch.cat([c.flatten() for c in chunks])
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.mesh.groups[axis])
        self._count("all_to_all", send.numel() * send.element_size(), axis)
        pieces = [p.reshape(chunks[0].shape) for p in recv.chunk(m)]
        return torch.cat(pieces, dim=whole)

    def all_reduce(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=self.mesh.groups[axis])
        self._count("all_reduce", x.numel() * x.element_size(), axis)
        return x


def shard_of(x: torch.Tensor, p: Placement, mesh: Mesh) -> torch.Tensor:
    """This rank's piece of a whole tensor (outer mesh axis first within a dim)."""
    for axis, d in enumerate(p):
        if d >= 0:
            x = x.chunk(mesh.shape[axis], dim=d)[mesh.coords[axis]]
    return x


def reshard(x: torch.Tensor, src: Placement, dst: Placement, shape: tuple[int, ...], coll: Collectives) -> torch.Tensor:
    mesh = coll.mesh
    for s in reshard_steps(src, dst, shape, mesh.shape, 0.0):
        if s.kind == "all_gather":
            x = coll.all_gather(x, s.axis, s.dim)
        elif s.kind == "all_to_all":
            x = coll.all_to_all(x, s.axis, s.dim, s.dim2)
        else:
            x = x.chunk(mesh.shape[s.axis], dim=s.dim)[mesh.coords[s.axis]]
    return x


def run_cut(plan: LocalPlan, inputs: list[torch.Tensor], coll: Collectives,
            received: dict[Any, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Run this rank's local programs, issuing the plan's collectives between them."""
    env: dict[Any, torch.Tensor] = {**plan.constants, **(received or {})}
    for key, x, p in zip(plan.arg_keys, inputs, plan.arg_placements):
        env[key] = shard_of(x, p, coll.mesh)
    for step in plan.steps:
        if isinstance(step, Segment):
            env.update(zip(step.outputs, step.kernel(*[env[k] for k in step.inputs])))
        elif step.kind == "reshard":
            src, dst, shape = step.placement
            env[step.dst] = reshard(env[step.src], src, dst, shape, coll)
        else:
            y = env[step.src]
            for axis in step.placement:
                y = coll.all_reduce(y, axis)
            env[step.dst] = y
    return [env[k] for k in plan.result_keys]


def prepare(text: str, params: dict[str, torch.Tensor], mesh: Mesh, backend: str) -> tuple[LocalPlan, dict]:
    """Parse the planned IR, cut this rank's local programs, build them with `backend`."""
    from compiler.distributed import local_program
    from ir import parse_module
    from ir.program import entry_function

    fn = entry_function(parse_module(text))
    plan = local_program.cut(fn, params, mesh.shape, mesh.coords)
    return plan, prepare_plan(plan, mesh, backend, _ravel(mesh.coords, mesh.shape))


def prepare_plan(plan: LocalPlan, mesh: Any, backend: str, rank: int) -> dict[str, Any]:
    from compiler.distributed import local_program
    from compiler.driver import default_cache_dir

    # one artifact folder per rank: ranks build at the same moment and must not race on a file
    cache = default_cache_dir() / "distributed" / f"rank{rank}"
    return local_program.build(plan, backend, num_threads=1, cache_dir=cache)


def run_rank(ctx: RankContext, payload: tuple, inputs: tuple[torch.Tensor, ...],
             expected: list[torch.Tensor] | None, atol: float, rtol: float, repeats: int = 3,
             backend: str = "tvm") -> dict[str, Any]:
    text, params, order, predicted, summary = payload
    mesh = Mesh(ctx.mesh, ctx.rank)
    plan, built = prepare(text, params, mesh, backend)
    ordered = [inputs[i] for i in order]
    coll = Collectives(mesh)
    with torch.no_grad():
        outs = run_cut(plan, ordered, coll)
    issued = dict(coll.calls)
    sent_mb = coll.sent / 1e6
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        with torch.no_grad():
            run_cut(plan, ordered, Collectives(mesh))
        times.append(time.perf_counter() - start)
    measured = statistics.median(times)
    report: dict[str, Any] = {
        "rank": ctx.rank, "issued": issued, "predicted": predicted, "collectives_match": issued == predicted,
        "sent_mb": sent_mb, "modeled_comm_mb": float(summary.get("comm_mb", math.nan)),
        "measured_ms": measured * 1e3, "modeled_ms": float(summary.get("time_us", math.nan)) / 1e3,
        "chosen": summary.get("chosen"), "status": summary.get("status"), **built,
    }
    if expected is not None:
        errs = [float((a - b).abs().max()) for a, b in zip(outs, expected)]
        report["max_abs_error"] = max(errs) if errs else 0.0
        report["ok"] = all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(outs, expected))
    return report


def run_many(ctx: RankContext, jobs: list[tuple]) -> list[dict[str, Any]]:
    """Several planned models in one process group (tests: one spawn checks every plan).

    A job is (kind, payload, inputs, expected, atol, rtol[, backend]), kind "shard",
    "pipeline" or "compiled".
    """
    from compiler.distributed import pipeline_runtime

    out = []
    for kind, *job in jobs:
        if kind == "pipeline":
            out.append(pipeline_runtime.run_rank(ctx, *job[:5], backend=job[5] if len(job) > 5 else "tvm"))
        elif kind == "compiled":  # plan inside this group, then call it like the model
            out.append(_run_compiled(ctx, *job))
        else:
            out.append(run_rank(ctx, *job[:5], repeats=1, backend=job[5] if len(job) > 5 else "tvm"))
        dist.barrier()
    return out


def _run_compiled(ctx: RankContext, model, pipeline: str | None, inputs, expected, atol: float, rtol: float,
                  backend: str = "tvm") -> dict:
    """The public API inside this group: `compile_model(..., mesh=...)`, and a mesh that cannot fit."""
    from compiler import compile_model
    from compiler.distributed.plan import PlanError

    sharded = compile_model(model, inputs, target=backend, pipeline=pipeline, mesh=ctx.mesh)
    out = sharded(*inputs)
    try:
        compile_model(model, inputs, target=backend, mesh=(ctx.world_size * 2,))
        wrong_mesh = "accepted"
    except PlanError as err:
        wrong_mesh = str(err)
    return {"ok": torch.allclose(out, expected[0], atol=atol, rtol=rtol), "issued": sharded.last_collectives,
            "predicted": sharded.planned.predicted, "backend": sharded.build["backend"],
            "local_programs": sharded.build["local_programs"], "wrong_mesh": wrong_mesh}
