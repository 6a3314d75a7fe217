"""Expert-parallel execution on torch.distributed: each rank holds its placed experts only.

Per rank, per MoE layer (the execution model `passes/experts/cost.py` prices):
1. routing is known on every rank (the dense parts, router included, are replicated);
   `cost.route` gives each (token, choice) its device, from the placement;
2. each rank dispatches the tokens it owns: counts first (`all_to_all_single` on a count
   vector), then rows and (token, choice, expert) ids with `all_to_all_single` and uneven
   splits (the list-form `all_to_all` fails on gloo with uneven sizes);
3. experts run locally on the rows received, one expert at a time, through Kiln's compiled
   expert MLP (`experts_kernels.py`: TVM by default, eager as an option), and the outputs go to the device of each token's top-1 expert the same way;
4. that device combines them (weighted sum over choices) and becomes the token's owner;
   an all-reduce of the disjoint combined rows (exact: x + 0 = x) stands in for ExFlow's
   context all-gather, so the replicated dense part sees every token.
Rows sent to another rank are counted (tokens and bytes), per step, to check the plan.

MoE sites are recognized by structure: an HF-style experts module called as
`experts(hidden [T, H], top_k_index [T, K], top_k_weights [T, K])` with expert-stacked
parameters, or a zoo-style module with `route()` and stacked `w_gate/w_up/w_down`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from compiler.distributed.experts_kernels import ExpertKernels, GateUpExpert, ZooExpert, hf_kind
from passes.experts.cost import Placement, homes, route

ZOO_EXPERT = ZooExpert()

ExpertFn = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class Counters:
    dispatched: int = 0  # rows sent to another rank at dispatch
    returned: int = 0  # rows sent to another rank at return
    bytes: int = 0  # payload bytes of those rows
    sync_bytes: int = 0  # all-reduce of combined rows (same for every placement)
    a2a_seconds: float = 0.0  # wall time in the all_to_all_single calls (reported, never asserted)
    computed: list[list[int]] = field(default_factory=list)  # [layer] -> rows computed on this rank


class ExpertParallel:
    """The per-rank state shared by all MoE sites of one model: placement, layer, owners."""

    def __init__(self, placement: Placement, rank: int, world: int, backend: str = "tvm") -> None:
        self.placement, self.rank, self.world = placement, rank, world
        self.kernels = ExpertKernels(backend)
        self.why_eager: list[str] = []  # MoE sites whose experts run their own eager code
        self.layer = 0
        self.owner: np.ndarray | None = None
        self.count = Counters()

    def start_call(self) -> None:
        self.layer, self.owner = 0, None

    def _exchange(self, rows: torch.Tensor, meta: torch.Tensor, dest: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
        start = time.perf_counter()
        order = np.argsort(dest, kind="stable")
        send = np.bincount(dest, minlength=self.world)
        counts = torch.tensor(send, dtype=torch.int64)
        recv = torch.empty_like(counts)
        dist.all_to_all_single(recv, counts)
        rs, ss = recv.tolist(), send.tolist()
        idx = torch.from_numpy(order)
        out = rows.new_empty((sum(rs), rows.shape[1]))
        dist.all_to_all_single(out, rows[idx].contiguous(), rs, ss)
        out_meta = meta.new_empty((sum(rs), meta.shape[1]))
        dist.all_to_all_single(out_meta, meta[idx].contiguous(), rs, ss)
        remote = sum(n for d, n in enumerate(ss) if d != self.rank)
        self.count.a2a_seconds += time.perf_counter() - start
        self.count.bytes += remote * rows.shape[1] * rows.element_size()
        return out, out_meta, remote

    def moe(self, tokens: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, expert: ExpertFn) -> torch.Tensor:
        """Expert-parallel equivalent of sum_j w[t,j] * expert_{idx[t,j]}(tokens[t])."""
        t, k = idx.shape
        experts = idx.cpu().numpy().astype(np.int64)
        owner = homes(t, self.world) if self.owner is None else self.owner
        dev = route(self.placement, self.layer, experts, owner)
        tok, ch = np.nonzero(np.broadcast_to(owner[:, None] == self.rank, (t, k)))
        meta = torch.from_numpy(np.stack([tok, ch, experts[tok, ch]], 1).astype(np.int64))
        rows, got, remote = self._exchange(tokens[torch.from_numpy(tok)], meta, dev[tok, ch])
        self.count.dispatched += remote
        out = torch.empty_like(rows)
        for e in torch.unique(got[:, 2]).tolist():
            sel = torch.nonzero(got[:, 2] == e)[:, 0]
            out[sel] = expert(int(e), rows[sel]).to(out.dtype)
        while len(self.count.computed) <= self.layer:
            self.count.computed.append([0] * self.world)
        self.count.computed[self.layer][self.rank] += int(rows.shape[0])
        primary = dev[:, 0]
        back, back_meta, remote = self._exchange(out, got[:, :2].contiguous(), primary[got[:, 0].numpy()])
        self.count.returned += remote
        ys = tokens.new_zeros((t, k, tokens.shape[1]))
        ys[back_meta[:, 0], back_meta[:, 1]] = back
        mine = torch.from_numpy(primary == self.rank)
        combined = (ys * w.to(ys.dtype)[..., None]).sum(1) * mine[:, None].to(ys.dtype)
        dist.all_reduce(combined)
        self.count.sync_bytes += int(mine.sum()) * tokens.shape[1] * tokens.element_size()
        self.owner = primary
        self.layer += 1
        return combined


def _hf_experts(module: torch.nn.Module) -> bool:
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return False
    stacked = [p for p in module.parameters(recurse=False) if p.dim() == 3]
    return len(params) == 3 and "index" in params[1] and bool(stacked)


def _zoo_moe(module: torch.nn.Module) -> bool:
    return callable(getattr(module, "route", None)) and all(
        isinstance(getattr(module, n, None), torch.nn.Parameter) for n in ("w_gate", "w_up", "w_down"))


def install(model: torch.nn.Module, ep: ExpertParallel) -> int:
    """Swap every recognized MoE site's forward for the expert-parallel one; returns how many."""
    sites = 0
    for module in model.modules():
        if _hf_experts(module):
            original = module.forward

            why = hf_kind(module)
            if why:
                ep.why_eager.append(why)

            def hf_forward(hidden, top_k_index, top_k_weights, _orig=original, _m=module, _why=why):
                def expert(e: int, rows: torch.Tensor) -> torch.Tensor:
                    n = rows.shape[0]
                    if _why is None:
                        mlp = GateUpExpert(_m.act_fn)
                        return ep.kernels.run(mlp, rows, (_m.gate_up_proj[e], _m.down_proj[e]), hidden.shape[0])
                    return _orig(rows, torch.full((n, 1), e, dtype=top_k_index.dtype), rows.new_ones((n, 1)))

                return ep.moe(hidden, top_k_index.reshape(hidden.shape[0], -1),
                              top_k_weights.reshape(hidden.shape[0], -1), expert)

            module.forward = hf_forward
            sites += 1
        elif _zoo_moe(module):
            def zoo_forward(x, _m=module):
                b, s, d = x.shape
                tokens = x.reshape(b * s, d)
                idx, w = _m.route(tokens)

                def expert(e: int, rows: torch.Tensor) -> torch.Tensor:
                    return ep.kernels.run(ZOO_EXPERT, rows, (_m.w_gate[e], _m.w_up[e], _m.w_down[e]), b * s)

                return ep.moe(tokens, idx, w, expert).reshape(b, s, d)

            module.forward = zoo_forward
            sites += 1
    return sites


def run_expert_parallel(model: torch.nn.Module, inputs: tuple[Any, ...], placement: Placement,
                        backend: str = "tvm") -> tuple[Any, Counters, ExpertParallel]:
    """On an initialized group: run `model(*inputs)` expert-parallel; totals summed over ranks."""
    ep = ExpertParallel(placement, dist.get_rank(), dist.get_world_size(), backend)
    if install(model, ep) == 0:
        raise ValueError("no MoE site recognized in the model (experts(hidden, top_k_index, top_k_weights) "
                         "or route() with stacked w_gate/w_up/w_down)")
    ep.start_call()
    with torch.no_grad():
        out = model(*inputs)
    c = ep.count
    comp = torch.tensor(c.computed or [[0] * ep.world], dtype=torch.int64)
    totals = torch.tensor([c.dispatched, c.returned, c.bytes, c.sync_bytes], dtype=torch.int64)
    dist.all_reduce(totals)
    dist.all_reduce(comp)
    slowest = torch.tensor([c.a2a_seconds], dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    d, r, b, s = totals.tolist()
    return out, Counters(d, r, b, s, float(slowest.item()), comp.tolist()), ep


def run_rank(ctx: Any, model_spec: str, pipeline: str, check: bool = True, atol: float = 1e-4,
             rtol: float = 1e-4, backend: str = "tvm") -> dict[str, Any]:
    """`kiln run`'s per-rank entry: plan on rank 0, broadcast, run expert-parallel, compare, count."""
    from compiler.model_loader import load_model

    model, inputs, _ = load_model(model_spec)
    return run_model(ctx, model.eval(), tuple(inputs), pipeline, check, atol, rtol, backend)


def run_model(ctx: Any, model: torch.nn.Module, inputs: tuple[Any, ...], pipeline: str, check: bool = True,
              atol: float = 1e-4, rtol: float = 1e-4, backend: str = "tvm") -> dict[str, Any]:
    from compiler.distributed.experts_plan import plan, predict

    box: list[Any] = [None, None]
    if ctx.rank == 0:
        try:
            box = list(plan(model, inputs, pipeline, ctx.world_size))
        except Exception as err:  # noqa: BLE001  every rank must learn of it, or the others wait forever
            box = [None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"]
    dist.broadcast_object_list(box, src=0)
    placement, summary = box
    if placement is None:
        raise ValueError(f"planning failed on rank 0: {summary}")
    with torch.no_grad():
        eager = model(*inputs)
    predicted = predict(model, inputs, placement)
    out, count, ep = run_expert_parallel(model, inputs, placement, backend)
    err = float((out - eager).abs().max())
    ok = bool(torch.allclose(out, eager, atol=atol, rtol=rtol)) if check else True
    loads = predicted.pop("predicted_loads")
    return {
        "ok": ok, "max_abs_error": err, "rank": ctx.rank,
        "expert_backend": backend if not ep.why_eager else f"{backend} (eager: {'; '.join(ep.why_eager)})",
        "expert_builds": ep.kernels.builds, "expert_kernel_calls": ep.kernels.calls,
        "dispatch_tokens": count.dispatched, "return_tokens": count.returned,
        "cross_tokens": count.dispatched + count.returned, "cross_bytes": count.bytes,
        "sync_bytes": count.sync_bytes, "a2a_seconds": round(count.a2a_seconds, 6), "computed_loads": count.computed, **predicted,
        "loads_match": count.computed == loads,
        "counts_match": count.dispatched == predicted["predicted_dispatch_tokens"]
        and count.returned == predicted["predicted_return_tokens"],
        **{f"plan_{k}": v for k, v in summary.items()},
    }


def run_many(ctx: Any, cases: list[tuple]) -> list[dict[str, Any]]:
    """Several (model_spec, pipeline[, backend]) checks in one spawned group (one spawn costs ~5 s here)."""
    return [run_rank(ctx, c[0], c[1], backend=c[2] if len(c) > 2 else "tvm") for c in cases]
