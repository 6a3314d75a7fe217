"""One rank of a pipeline plan: one stage, microbatches in, activations out (forward-only GPipe).

The ranks form a (stages, *submesh) mesh: the ranks of stage s run the ops marked
`kiln.stage = s`, sharded over their submesh as the `shard` pass planned them (a plain
pipeline is planned with a one-device submesh). Each rank cuts its stage into local
programs for one microbatch (`local_program.cut(stage=s, microbatches=M)`), built by the
backend (tvm or eager), with the shard plan's collectives on the submesh's groups between
them. Stage 0 slices its microbatch from the inputs; later stages `recv` the one
activation that crosses the cut (the pass cuts only where a single value is live), each
rank its own shard of it from the same position in the stage before, and each stage
`send`s its own to the next. Blocking send/recv between neighbours already overlaps stage
s on microbatch i with stage s + 1 on microbatch i - 1; forward-only, GPipe and 1F1B
issue the same messages. The last stage's first rank sends the outputs to rank 0.

Why not torch.distributed.pipelining: it needs an nn.Module split per stage, and here the
stages are cuts of the IR; send/recv are the same primitives it uses.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from typing import Any

import torch
import torch.distributed as dist
from xdsl.dialects import func

from compiler.distributed.launch import RankContext
from ir import dtypes

SOURCES = ("kiln.param", "kiln.constant")


def run_rank(ctx: RankContext, payload: tuple, inputs: tuple[torch.Tensor, ...],
             expected: list[torch.Tensor] | None, atol: float, rtol: float, repeats: int = 1,
             backend: str = "tvm") -> dict[str, Any]:
    from compiler.distributed.local_program import cut
    from compiler.distributed.shard_runtime import Collectives, Mesh, SubMesh, prepare_plan, run_cut
    from ir import parse_module
    from ir.program import entry_function

    text, params, order, predicted_shard, summary = payload
    fn = entry_function(parse_module(text))
    stages, m = int(summary["stages"]), int(summary["microbatches"])
    sub = tuple(int(d) for d in fn.attributes["kiln.mesh"].data.split("x"))  # type: ignore[union-attr]
    if ctx.world_size != stages * math.prod(sub):
        raise ValueError(f"the plan has {stages} stages of {math.prod(sub)} devices but the run has "
                         f"{ctx.world_size} ranks")
    mesh = SubMesh(Mesh((stages, *sub), ctx.rank))  # axis 0: stages; the rest: this stage's submesh
    s, width = ctx.rank // math.prod(sub), math.prod(sub)
    ret = fn.body.block.ops.last
    incoming, outgoing = crossings(fn, s, stages)
    plan = cut(fn, params, mesh.shape, mesh.coords, stage=s, incoming=incoming, outgoing=outgoing, microbatches=m)
    built = prepare_plan(plan, mesh, backend, ctx.rank)
    args = [inputs[i] for i in order]
    calls: Counter[str] = Counter()
    coll = Collectives(mesh)

    def step() -> list[torch.Tensor]:
        outs: list[list[torch.Tensor]] = []
        with torch.no_grad():
            for mb in range(m):
                extra = {}
                if incoming is not None:
                    extra[incoming] = _recv(plan.value_shape(incoming), incoming, ctx.rank - width, calls)
                got = run_cut(plan, [x.chunk(m)[mb] for x in args], coll, extra)
                if outgoing is not None:
                    dist.send(got[0].contiguous(), dst=ctx.rank + width)
                    calls["send"] += 1
                else:
                    outs.append(got)
        final = [torch.cat(parts) for parts in zip(*outs)] if outs else []
        if stages > 1 and ctx.rank == (stages - 1) * width:  # the last stage hands the outputs to rank 0
            for t in final:
                dist.send(t.contiguous(), dst=0)
                calls["send"] += 1
        elif stages > 1 and ctx.rank == 0:
            final = []
            for v in ret.operands:
                t = torch.empty(dtypes.shape_of(v.type), dtype=dtypes.dtype_of(v.type))
                dist.recv(t, src=(stages - 1) * width)
                calls["recv"] += 1
                final.append(t)
        return final

    final = step()
    issued = {**dict(coll.calls), **dict(calls)}
    sent_mb = coll.sent / 1e6
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    predicted: Counter[str] = Counter({k: v * m for k, v in predicted_shard.get(s, {}).items()})
    if stages > 1:
        head, tail = ctx.rank == 0, ctx.rank == (stages - 1) * width
        predicted["send"] += m * (s < stages - 1) + len(ret.operands) * tail
        predicted["recv"] += m * (s > 0) + len(ret.operands) * head
    predicted_d = {k: v for k, v in predicted.items() if v}
    report: dict[str, Any] = {"rank": ctx.rank, "stage": s, "issued": issued, "predicted": predicted_d,
                              "collectives_match": issued == predicted_d, "sent_mb": sent_mb,
                              "modeled_comm_mb": m * float(summary.get("stage_comm_mb", [0.0] * stages)[s]),
                              "measured_ms": statistics.median(times) * 1e3 if times else math.nan,
                              "modeled_ms": float(summary.get("objective_us", 0.0)) / 1e3,
                              "cuts": summary.get("cuts"), "submesh": "x".join(map(str, sub)), **built}
    if ctx.rank == 0 and expected is not None:
        report["max_abs_error"] = max(float((a - b).abs().max()) for a, b in zip(final, expected))
        report["ok"] = all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(final, expected))
    return report


def crossings(fn: func.FuncOp, s: int, stages: int) -> tuple[Any, Any]:
    """The activation stage `s` receives (None for the first) and the one it sends (None for the last)."""
    ops = [o for o in fn.body.block.ops if not isinstance(o, func.ReturnOp)]
    ret = fn.body.block.ops.last
    stage = {o: int(o.attributes["kiln.stage"].value.data) for o in ops}  # type: ignore[union-attr]
    return (_crossing(ops, stage, ret, s - 1) if s > 0 else None,
            _crossing(ops, stage, ret, s) if s < stages - 1 else None)


def _crossing(ops: list, stage: dict, ret, s: int):
    """The one value made at stage <= s and used after it (the pass guarantees one)."""
    later = [o for o in ops if stage[o] > s and o.name not in SOURCES]
    found = {v for o in later for v in o.operands
             if v.owner in stage and stage[v.owner] <= s and v.owner.name not in SOURCES}
    found |= {v for v in ret.operands if v.owner in stage and stage[v.owner] <= s}
    if len(found) != 1:
        raise RuntimeError(f"stage {s}: {len(found)} values cross the cut after it; the plan needs exactly one")
    return found.pop()


def _recv(shape: tuple[int, ...], value, src: int, calls: Counter) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtypes.dtype_of(value.type))
    dist.recv(t, src=src)
    calls["recv"] += 1
    return t
