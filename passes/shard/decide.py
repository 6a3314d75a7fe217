"""Choose a sharding plan: solve every baseline, then the ILP (warm-started from the best one).

Returns the chosen strategy per class and a flat, JSON-friendly summary: what was chosen,
the solver's status, objective, bound, gap and seconds, and each baseline's modeled time,
bytes sent and memory per device (and whether it fits the memory budget). A solver that
runs out of time with an incumbent keeps it (status time_limit, gap reported); without one
the best baseline that fits is used and the summary says `fallback`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from passes.shard.baselines import BASELINES, allowed
from passes.shard.cost import CostTables, evaluate
from passes.shard.ilp import solve_plan
from passes.shard.placement import text

SOLVERS = ("ilp", *BASELINES)


class ShardError(ValueError):
    """No plan fits (memory budget, mesh); the message says which and why."""


@dataclass
class Plan:
    choice: list[int]
    summary: dict[str, float | int | str]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """highspy 1.12 prints a stray line on fd 1 during some MIP solves (ENVIRONMENT.md)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def decide(t: CostTables, solver: str = "ilp", memory_bytes: float | None = None,
           time_limit: float = 10.0) -> Plan:
    g = t.graph
    start = time.perf_counter()
    summary: dict[str, float | int | str] = {
        "solver": solver, "mesh": "x".join(map(str, g.mesh)), "cluster": t.cluster.name,
        "ops": sum(1 for n in g.nodes if n.op is not None), "classes": len(g.classes),
        "strategies": sum(len(g.strategies(c)) for c in range(len(g.classes))),
    }
    if memory_bytes is not None:
        summary["memory_budget_mb"] = memory_bytes / 1e6
    plans: dict[str, list[int]] = {}
    with stdout_to_stderr():
        for name in BASELINES:
            b_start = time.perf_counter()
            choice, sol = solve_plan(t, allowed(g, name), None, time_limit)
            if choice is None:
                summary[f"{name}_status"] = sol.status
                continue
            plans[name] = choice
            cost = evaluate(t, choice)
            fits = memory_bytes is None or cost["memory_mb"] * 1e6 <= memory_bytes
            summary.update({f"{name}_time_us": cost["time_us"], f"{name}_comm_mb": cost["comm_mb"],
                            f"{name}_memory_mb": cost["memory_mb"], f"{name}_fits": int(fits),
                            f"{name}_seconds": time.perf_counter() - b_start})
        fitting = [n for n in plans if summary[f"{n}_fits"]]
        best = min(fitting, key=lambda n: summary[f"{n}_time_us"]) if fitting else None
        summary["best_baseline"] = best or "none fits"
        if solver != "ilp":
            if solver not in plans:
                raise ShardError(f"shard: the {solver} plan is infeasible on mesh {summary['mesh']}")
            choice, status = plans[solver], "rule"
        else:
            s_start = time.perf_counter()  # the ILP gets the whole time limit (each baseline had it too)
            choice, sol = solve_plan(t, None, memory_bytes, time_limit, warm=plans[best] if best else None)
            summary.update({"status": sol.status, "solve_seconds": time.perf_counter() - s_start,
                            "variables": len(sol.values)})
            if sol.objective is not None:
                summary.update({"objective_us": sol.objective, "bound_us": sol.bound or 0.0, "gap": sol.gap or 0.0})
            status = sol.status
            if choice is None:
                if best is None:
                    raise ShardError(
                        f"shard: no plan fits {memory_bytes / 1e9:.3g} GB per device on mesh {summary['mesh']} "
                        f"(solver {sol.status}); raise memory-gb or use a larger mesh")
                choice, status = plans[best], "fallback"
                summary["fallback"] = f"solver {sol.status}: using the {best} baseline"
    summary["status"] = status
    cost = evaluate(t, choice)
    summary.update({"time_us": cost["time_us"], "comm_us": cost["comm_us"], "comm_mb": cost["comm_mb"],
                    "memory_mb": cost["memory_mb"], "collectives": cost["collectives"],
                    "seconds": time.perf_counter() - start, "chosen": describe(t, choice)})
    return Plan(choice, summary)


def describe(t: CostTables, choice: list[int]) -> str:
    """The contractions' strategies, counted: e.g. `linear [replicate, shard(2)] x8; ...`."""
    g = t.graph
    counts: Counter[str] = Counter()
    for c, members in enumerate(g.classes):
        node = g.nodes[members[0]]
        if node.op is not None and node.op.name in ("kiln.linear", "kiln.matmul", "kiln.attention"):
            st = node.strategies[choice[c]]
            w = f" w{text(st.ins[1])}" if node.op.name == "kiln.linear" else ""
            counts[f"{node.op.name[5:]}{w} -> {st.label()}"] += len(members)
    return "; ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
