"""One rank of a sharded plan: local shards, local ops, and the collectives the plan names.

Each rank parses the planned IR and walks it in order. A value lives as (local tensor,
placement). Before an op, every operand is redistributed to the placement the op's
strategy wants (`kiln.operand_placements`) by executing `reshard_steps`, the same steps
the cost model priced: all_gather / all_to_all_single on the mesh axis's process group,
or a free local slice. The op then runs on local shards through its reference (eager
torch) implementation; a reshape gets its local shape, and a contraction split along its
reduced dim all-reduces (then adds its bias) on the axes in `kiln.all_reduce`.

Why explicit collectives rather than DTensor: the plan already names every collective,
so issuing exactly those keeps the count checkable (predicted == issued by construction
of one step list) and keeps the runtime independent of DTensor's own sharding
propagation, which would pick its own redistributions. Local ops run eager (the
interpreter's reference kernels), not TVM: building a TVM module per rank for local
shapes is not done yet.
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
import torch.nn.functional as F
from xdsl.dialects import func

from compiler.distributed.launch import RankContext
from cost_models import comm
from ir import dtypes
from passes.shard.placement import Placement, local_shape, parse, replicated, reshard_steps


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


def run_local(fn: func.FuncOp, inputs: list[torch.Tensor], params: dict[str, torch.Tensor],
              coll: Collectives) -> list[torch.Tensor]:
    mesh = coll.mesh
    arg_pl = [parse(t) for t in fn.attributes["kiln.arg_placements"].data.split(";")]  # type: ignore[union-attr]
    env: dict[Any, tuple[torch.Tensor, Placement]] = {}
    for arg, x, p in zip(fn.body.block.args, inputs, arg_pl):
        env[arg] = (shard_of(x, p, mesh), p)
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            rep = replicated(mesh.shape)
            return [reshard(env[v][0], env[v][1], rep, dtypes.shape_of(v.type), coll) for v in op.operands]
        out_p = parse(op.attributes["kiln.placement"].data)  # type: ignore[union-attr]
        if op.name == "kiln.param":
            env[op.results[0]] = (shard_of(params[op.opt("name")], out_p, mesh), out_p)  # type: ignore[attr-defined]
            continue
        if op.name == "kiln.constant":
            env[op.results[0]] = (shard_of(op.reference(), out_p, mesh), out_p)  # type: ignore[attr-defined]
            continue
        wants = [parse(t) for t in op.attributes["kiln.operand_placements"].data.split(";")]  # type: ignore[union-attr]
        local = [reshard(env[v][0], env[v][1], q, dtypes.shape_of(v.type), coll) for v, q in zip(op.operands, wants)]
        reduce_axes = [int(a) for a in op.attributes["kiln.all_reduce"].data.split(",")] \
            if "kiln.all_reduce" in op.attributes else []  # type: ignore[union-attr]
        out = _apply(op, local, out_p, reduce_axes, coll)
        for r, value in zip(op.results, out if isinstance(out, tuple) else (out,)):
            env[r] = (value, out_p)  # several results (top-k) are replicated alike
    raise RuntimeError("function has no return")


def _apply(op, local: list[torch.Tensor], out_p: Placement, reduce_axes: list[int], coll: Collectives) -> torch.Tensor:
    if op.name == "kiln.reshape":
        return local[0].reshape(local_shape(out_p, dtypes.shape_of(op.results[0].type), coll.mesh.shape))
    if not reduce_axes:
        return op.reference(*local)
    if op.name == "kiln.linear":
        y = F.linear(local[0], local[1])
    elif op.name == "kiln.matmul":
        y = torch.matmul(local[0], local[1])
    else:
        raise RuntimeError(f"{op.name} has a reduced-dim split but no partial-sum rule")
    for axis in reduce_axes:
        y = coll.all_reduce(y, axis)
    return y + local[2] if len(local) == 3 else y


def run_rank(ctx: RankContext, payload: tuple, inputs: tuple[torch.Tensor, ...],
             expected: list[torch.Tensor] | None, atol: float, rtol: float, repeats: int = 3) -> dict[str, Any]:
    from ir import parse_module
    from ir.program import entry_function

    text, params, order, predicted, summary = payload
    fn = entry_function(parse_module(text))
    mesh = Mesh(ctx.mesh, ctx.rank)
    ordered = [inputs[i] for i in order]
    coll = Collectives(mesh)
    with torch.no_grad():
        outs = run_local(fn, ordered, params, coll)
    issued = dict(coll.calls)
    sent_mb = coll.sent / 1e6
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        with torch.no_grad():
            run_local(fn, ordered, params, Collectives(mesh))
        times.append(time.perf_counter() - start)
    measured = statistics.median(times)
    report: dict[str, Any] = {
        "rank": ctx.rank, "issued": issued, "predicted": predicted, "collectives_match": issued == predicted,
        "sent_mb": sent_mb, "modeled_comm_mb": float(summary.get("comm_mb", math.nan)),
        "measured_ms": measured * 1e3, "modeled_ms": float(summary.get("time_us", math.nan)) / 1e3,
        "chosen": summary.get("chosen"), "status": summary.get("status"), "executor": "eager (reference ops)",
    }
    if expected is not None:
        errs = [float((a - b).abs().max()) for a, b in zip(outs, expected)]
        report["max_abs_error"] = max(errs) if errs else 0.0
        report["ok"] = all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(outs, expected))
    return report


def run_many(ctx: RankContext, jobs: list[tuple]) -> list[dict[str, Any]]:
    """Several planned models in one process group (tests: one spawn checks every plan).

    A job is (kind, payload, inputs, expected, atol, rtol), kind "shard" or "pipeline".
    """
    from compiler.distributed import pipeline_runtime

    out = []
    for kind, *job in jobs:
        if kind == "pipeline":
            out.append(pipeline_runtime.run_rank(ctx, *job))
        elif kind == "compiled":  # plan inside this group, then call it like the model
            out.append(_run_compiled(ctx, *job))
        else:
            out.append(run_rank(ctx, *job, repeats=1))
        dist.barrier()
    return out


def _run_compiled(ctx: RankContext, model, pipeline: str, inputs, expected, atol: float, rtol: float) -> dict:
    from compiler.distributed.sharded_module import compile_sharded

    sharded = compile_sharded(model, inputs, ctx.mesh, pipeline)
    out = sharded(*inputs)
    return {"ok": torch.allclose(out, expected[0], atol=atol, rtol=rtol), "issued": sharded.last_collectives,
            "predicted": sharded.planned.predicted}
