"""One rank of a pipeline plan: one stage, microbatches in, activations out (forward-only GPipe).

Rank s runs the ops marked `kiln.stage = s` on every microbatch in turn: stage 0 slices
its microbatch from the inputs, later stages `recv` the one activation that crosses the
cut (the pass cuts only where a single value is live), and each stage `send`s its own to
the next. Blocking send/recv between neighbours already overlaps stage s on microbatch i
with stage s + 1 on microbatch i - 1; forward-only, GPipe and 1F1B issue the same
messages. The last stage sends the concatenated outputs back to rank 0 for `--check`.

Why not torch.distributed.pipelining: it needs an nn.Module split per stage, and here the
stages are cuts of the IR; send/recv are the same primitives it uses. Ops run eager
(reference kernels), with reshapes scaled to the microbatch.
"""

from __future__ import annotations

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
             expected: list[torch.Tensor] | None, atol: float, rtol: float) -> dict[str, Any]:
    from ir import parse_module
    from ir.program import entry_function

    text, params, order, _, summary = payload
    fn = entry_function(parse_module(text))
    stages, m = int(summary["stages"]), int(summary["microbatches"])
    if ctx.world_size != stages:
        raise ValueError(f"the plan has {stages} stages but the run has {ctx.world_size} ranks")
    s = ctx.rank
    ops = [o for o in fn.body.block.ops if not isinstance(o, func.ReturnOp)]
    ret = fn.body.block.ops.last
    stage = {o: int(o.attributes["kiln.stage"].value.data) for o in ops}  # type: ignore[union-attr]
    mine = [o for o in ops if stage[o] == s or o.name in SOURCES]
    incoming = _crossing(ops, stage, ret, s - 1) if s > 0 else None
    outgoing = _crossing(ops, stage, ret, s) if s < stages - 1 else None
    args = [inputs[i] for i in order]
    calls: Counter[str] = Counter()
    outs: list[list[torch.Tensor]] = []
    start = time.perf_counter()
    with torch.no_grad():
        for mb in range(m):
            env: dict[Any, torch.Tensor] = {a: x.chunk(m)[mb] for a, x in zip(fn.body.block.args, args)}
            if incoming is not None:
                env[incoming] = _recv(incoming, m, s - 1, calls)
            for o in mine:
                if any(v not in env for v in o.operands):
                    continue  # a source's consumer lives on another stage
                out = _apply(o, [env[v] for v in o.operands], params, m)
                env.update(zip(o.results, out if isinstance(out, tuple) else (out,)))
            if outgoing is not None:
                dist.send(env[outgoing].contiguous(), dst=s + 1)
                calls["send"] += 1
            else:
                outs.append([env[v] for v in ret.operands])
    final = [torch.cat(parts) for parts in zip(*outs)] if outs else []
    if stages > 1:  # the last stage hands the outputs to rank 0
        if s == stages - 1:
            for t in final:
                dist.send(t.contiguous(), dst=0)
                calls["send"] += 1
        elif s == 0:
            final = []
            for v in ret.operands:
                t = torch.empty(dtypes.shape_of(v.type), dtype=dtypes.dtype_of(v.type))
                dist.recv(t, src=stages - 1)
                calls["recv"] += 1
                final.append(t)
    seconds = time.perf_counter() - start
    predicted: Counter[str] = Counter()
    if stages > 1:
        predicted["send"] += m * (s < stages - 1) + len(ret.operands) * (s == stages - 1)
        predicted["recv"] += m * (s > 0) + len(ret.operands) * (s == 0)
    report: dict[str, Any] = {"rank": s, "stage_ops": sum(1 for o in mine if o.name not in SOURCES),
                              "issued": dict(calls), "predicted": {k: v for k, v in predicted.items() if v},
                              "collectives_match": dict(calls) == {k: v for k, v in predicted.items() if v},
                              "measured_ms": seconds * 1e3,
                              "modeled_ms": float(summary.get("objective_us", 0.0)) / 1e3,
                              "cuts": summary.get("cuts"), "executor": "eager (reference ops), send/recv"}
    if s == 0 and expected is not None:
        report["max_abs_error"] = max(float((a - b).abs().max()) for a, b in zip(final, expected))
        report["ok"] = all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(final, expected))
    return report


def _crossing(ops: list, stage: dict, ret, s: int):
    """The one value made at stage <= s and used after it (the pass guarantees one)."""
    later = [o for o in ops if stage[o] > s and o.name not in SOURCES]
    found = {v for o in later for v in o.operands
             if v.owner in stage and stage[v.owner] <= s and v.owner.name not in SOURCES}
    found |= {v for v in ret.operands if v.owner in stage and stage[v.owner] <= s}
    if len(found) != 1:
        raise RuntimeError(f"stage {s}: {len(found)} values cross the cut after it; the plan needs exactly one")
    return found.pop()


def _recv(value, m: int, src: int, calls: Counter) -> torch.Tensor:
    shape = list(dtypes.shape_of(value.type))
    shape[0] //= m
    t = torch.empty(shape, dtype=dtypes.dtype_of(value.type))
    dist.recv(t, src=src)
    calls["recv"] += 1
    return t


def _apply(op, local: list[torch.Tensor], params: dict[str, torch.Tensor], m: int) -> torch.Tensor:
    if op.name == "kiln.param":
        return params[op.opt("name")]
    if op.name == "kiln.reshape":
        shape = list(dtypes.shape_of(op.results[0].type))
        shape[0] //= m  # the batch leads; the pass refused batches m does not divide
        return local[0].reshape(shape)
    return op.reference(*local)
