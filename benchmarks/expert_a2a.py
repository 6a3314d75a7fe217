"""Measured all-to-all time per placement on gloo ranks (ratios against contiguous).

The modeled numbers (`expert_report.py`) count tokens; this measures what those tokens cost
on a real transport. Each rank runs the expert-parallel runtime's own exchange
(`ExpertParallel.moe`: counts, then rows, with `all_to_all_single` at dispatch and return)
on held-out routing replayed from a trace, with an identity expert, so only the exchange
is timed. Rows are `hidden` fp32 values (4 KiB at 1024). Placements are interleaved
(contiguous, ..., contiguous, ...) `repeats` times and the median of the slowest rank's
total all-to-all time is kept.

Caveat: this machine has 2 CPU cores shared with other work, and gloo on loopback costs
mostly latency and copies, so the ratios are indicative, not a forecast of NCCL over
NVLink; 4 ranks on 2 cores oversubscribe the CPU (a slow run, kept out of the tests).
`python -m benchmarks.expert_a2a --ranks 2` (also called by `expert_report --measure`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from passes.experts.cost import Placement


def rank_measure(ctx: Any, calls: list[np.ndarray], placements: dict[str, Placement], hidden: int,
                 repeats: int) -> dict[str, Any]:
    """Per placement, each repeat's slowest-rank all-to-all seconds, and the rows counted crossing."""
    import torch
    import torch.distributed as dist

    from compiler.distributed.experts_runtime import ExpertParallel

    torch.manual_seed(0)
    out: dict[str, Any] = {n: [] for n in placements}
    crossed: dict[str, int] = {}
    for _ in range(repeats):
        for name, placement in placements.items():
            ep = ExpertParallel(placement, ctx.rank, ctx.world_size, "eager")
            for call in calls:
                ep.start_call()
                tokens = torch.randn(call.shape[1], hidden)
                w = torch.full(call.shape[1:], 1.0 / call.shape[2])
                for layer in range(call.shape[0]):
                    tokens = ep.moe(tokens, torch.from_numpy(call[layer]), w, lambda e, rows: rows)
            slowest = torch.tensor([ep.count.a2a_seconds], dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            out[name].append(float(slowest.item()))
            moved = torch.tensor([ep.count.dispatched + ep.count.returned], dtype=torch.int64)
            dist.all_reduce(moved)
            crossed[name] = int(moved.item())
    return {"seconds": out, "crossed": crossed}


def measure(ranks: int, hidden: int = 1024, repeats: int = 5, time_limit: float = 4.0,
            affinity: float = 0.9, fan: int = 2) -> dict[str, Any]:
    from benchmarks.expert_traces import generate
    from compiler.distributed.launch import spawn
    from passes.experts import baselines as base
    from passes.experts.cost import evaluate
    from passes.experts.decide import decide

    full = generate(layers=8, experts=16, tokens=256, calls=8, zipf=1.0, affinity=affinity, fan=fan, seed=0)
    cal, held = full.split()
    cap = -(-cal.experts // ranks)
    plans = dict(base.baselines(cal, ranks, cap))
    plans["ilp"] = decide(cal, ranks, cap, 0, "ilp", time_limit).placement
    plans["ilp+replicas"] = decide(cal, ranks, -(-(cal.experts + 2) // ranks), 2, "ilp", time_limit).placement
    start = time.perf_counter()
    got = spawn("benchmarks.expert_a2a:rank_measure", ranks, (held.calls, plans, hidden, repeats), timeout_s=600)[0]
    rows = {}
    for name, secs in got["seconds"].items():
        med = statistics.median(secs)
        rows[name] = {"a2a_ms": round(1e3 * med, 2), "cross_tokens": evaluate(held, plans[name]).cross,
                      "counted_cross_tokens": got["crossed"][name]}
    ref = rows["contiguous"]
    for r in rows.values():
        r["time_ratio"] = round(r["a2a_ms"] / ref["a2a_ms"], 3)
        r["token_ratio"] = round(r["cross_tokens"] / ref["cross_tokens"], 3)
    return {"ranks": ranks, "hidden": hidden, "repeats": repeats, "affinity": affinity, "fan": fan,
            "wall_s": round(time.perf_counter() - start, 1), "rows": rows}


def table(res: dict[str, Any]) -> list[str]:
    out = [(f"| placement | cross tokens | tokens / contiguous | all-to-all ms (median of {res['repeats']}) "
           "| time / contiguous |"), "|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        out.append(f"| {name} | {r['cross_tokens']} | {r['token_ratio']:.2f} | {r['a2a_ms']:.1f} | "
                   f"{r['time_ratio']:.2f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    res = measure(a.ranks, a.hidden, a.repeats)
    print(json.dumps(res))
    print("\n".join(table(res)))


if __name__ == "__main__":
    main()
