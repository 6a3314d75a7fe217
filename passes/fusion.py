"""`fuse`: choose which ops share a kernel with an exact solver over a roofline cost model.

Set partitioning: every candidate group (`fusion_groups.py`) gets a binary variable and
its modeled time (`cost_models.roofline`: a group moves only its external inputs and
outputs); each op must be covered by exactly one chosen group; minimize total time. HiGHS
solves it under `time-limit`. Inductor-style greedy merging (`fusion_greedy.py`) is always
computed as the baseline, and is the answer when the solver times out without a solution
or when `solver=greedy`.

With `recompute=true` (the default) a second model then lets a cheap producer run in
several groups (`fusion_recompute.py`): set cover for elementwise and movement ops, with
each group charged exactly the writes someone needs. It starts from the partition's answer
and replaces it only when it is strictly cheaper, so it is never worse. With
`relax-convexity=true` it also considers groups that are convex only because a copy feeds
nothing outside them (a broadcast recomputed after a matmul that its original also
feeds). That is off by default: the ILP gets much harder (the zoo's gpt: 7 s to prove
optimal, or past the 10 s limit, instead of 0.3 s), and on the zoo it found 0.1-0.2% less
modeled time (Triton's rules, gpt and moe) only when given 20 s (benchmarks/fusion_report.py).

Convex groups can still feed each other (`fusion_order.py`); both models cut such
answers and solve again, so the chosen groups always run in some order.

The decision is written on the IR: every kiln op gets a `group` attribute (dense ids in
program order), and the module gets a `kiln.fusion` dictionary with what was chosen and
what the alternatives cost (none / greedy / ilp, and no_recompute: kernels, bytes,
modeled time; solver status, objective with and without recompute, bound, gap, seconds;
`recomputed`, how many op clones recompute added).
"""

from __future__ import annotations

import time
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

from cost_models.hardware import get_hardware
from cost_models.ilp import IntegerProgram, one_of, solve
from ir.program import entry_function
from passes.fusion_graph import FusionGraph
from passes.fusion_greedy import greedy_groups
from passes.fusion_groups import CandidateLimit, FusionRules, enumerate_candidates, sealed
from passes.fusion_order import find_cycle
from passes.fusion_recompute import REL_GAP, materialize, may_recompute, solve_cover
from passes.registry import register_pass

SOLVERS = ("ilp", "greedy", "none")


class FusionOptionError(ValueError):
    pass


@register_pass
@dataclass(frozen=True)
class FusionPass(ModulePass):
    name: ClassVar[str] = "fuse"

    solver: str = "ilp"
    max_group: int = 8
    time_limit: float = 10.0
    hardware: str = "cpu"
    fuse_contractions: bool = False
    multi_reduction: bool = True
    recompute: bool = True
    relax_convexity: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise FusionOptionError(f"fuse: unknown solver {self.solver!r}; use one of {', '.join(SOLVERS)}")
        if self.max_group < 1:
            raise FusionOptionError(f"fuse: max-group must be >= 1, got {self.max_group}")
        if self.time_limit <= 0:
            raise FusionOptionError(f"fuse: time-limit must be > 0 seconds, got {self.time_limit}")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        graph = FusionGraph.build(entry_function(op), get_hardware(self.hardware))
        rules = FusionRules(self.max_group, self.fuse_contractions, self.multi_reduction)
        decision = decide(graph, rules, self.solver, self.time_limit, self.recompute, self.relax_convexity)
        write_groups(graph, decision.groups, decision.home)
        op.attributes["kiln.fusion"] = decision.as_attr()


@dataclass
class Decision:
    groups: list[frozenset[int]]  # overlapping where an op is recomputed
    summary: dict[str, float | int | str]
    home: dict[int, int] | None = None  # op -> index in groups of the copy that stays the original

    def as_attr(self) -> DictionaryAttr:
        def attr(v):
            if isinstance(v, str):
                return StringAttr(v)
            if isinstance(v, int):
                return IntegerAttr(v, i64)
            return FloatAttr(float(v), f64)

        return DictionaryAttr({k: attr(v) for k, v in self.summary.items()})


def decide(
    graph: FusionGraph, rules: FusionRules, solver: str, time_limit: float,
    recompute: bool = False, relax_convexity: bool = False,
) -> Decision:
    none = [frozenset([i]) for i in range(len(graph))]
    start = time.perf_counter()
    deadline = start + time_limit  # greedy, enumeration and both solves share the budget
    greedy = greedy_groups(graph, rules) if solver != "none" else none
    greedy_s = time.perf_counter() - start
    summary: dict[str, float | int | str] = {"solver": solver, "ops": len(graph)}
    for label, groups in (("none", none), ("greedy", greedy)):
        summary.update(_describe(graph, label, groups))
    summary["greedy_seconds"] = greedy_s
    chosen, home = (none if solver == "none" else greedy), None
    if solver == "ilp" and len(graph):
        relax = may_recompute(graph) if recompute and relax_convexity else None
        candidates, info = _candidates(graph, rules, time_limit, relax)
        convex = candidates if relax is None else [g for g in candidates if _convex(graph, g, relax)]
        info.update(candidates=len(convex), recompute_candidates=len(candidates))
        chosen, solved = _solve_partition(graph, convex, greedy, deadline, recompute, info)
        summary.update(info)
        summary.update(_describe(graph, "ilp", chosen))
        if recompute and solved:
            chosen, home = _recompute(graph, candidates, chosen, deadline, summary)
    summary["chosen"] = solver if summary.get("status", "optimal") != "fallback" else "greedy"
    return Decision(chosen, summary, home)


def _convex(graph: FusionGraph, group: frozenset[int], relax: list[bool]) -> bool:
    """Convex without recompute's relaxation (see `fusion_groups.is_valid`)."""
    return len(group) == 1 or not sealed(graph, group, relax) or graph.is_convex(group)


def _candidates(graph: FusionGraph, rules: FusionRules, time_limit: float, relax: list[bool] | None):
    start = time.perf_counter()
    max_group, note = rules.max_group, ""
    deadline = start + time_limit / 2  # leave the solver at least half of the budget
    while True:
        try:
            candidates = enumerate_candidates(graph, rules, deadline if max_group > 1 else None, relax)
            break
        except CandidateLimit as why:  # too many to enumerate in time: smaller groups, and say so
            max_group -= 1
            rules = FusionRules(max_group, rules.fuse_contractions, rules.multi_reduction, rules.max_candidates)
            deadline = time.perf_counter() + time_limit / 4
            note = f"{why}; max-group lowered to {max_group}"
    info: dict[str, float | int | str] = {
        "candidates": len(candidates), "enumerate_seconds": time.perf_counter() - start
    }
    if note:
        info["note"] = note
    return candidates, info


def _solve_partition(graph, candidates, greedy, deadline: float, recompute: bool, info: dict):
    """Set partitioning; with recompute on it gets half the time left, the cover model the rest.

    A cyclic answer (`fusion_order.py`) is cut off and the program solved again."""
    program = IntegerProgram()
    covering: list[list[int]] = [[] for _ in range(len(graph))]
    for group in candidates:
        var = program.add_var(graph.cost(group) * 1e6)  # microseconds keep HiGHS's tolerances meaningful
        for i in group:
            covering[i].append(var)
    for rows in covering:
        one_of(program, rows)
    stop = deadline - (deadline - time.perf_counter()) / 2 if recompute else deadline
    seconds, cuts = 0.0, 0
    while True:
        solution = solve(program, time_limit=max(0.1, stop - time.perf_counter()), rel_gap=REL_GAP)
        seconds += solution.seconds
        info.update(status=solution.status, solve_seconds=seconds, cuts=cuts)
        if not solution.has_solution:
            info["status"] = "fallback"
            info["fallback_reason"] = f"solver status {solution.status} with no solution; using greedy"
            return greedy, False
        chosen = solution.chosen()
        groups = [candidates[j] for j in chosen]
        cycle = find_cycle(graph, groups, {i: k for k, g in enumerate(groups) for i in g})
        if cycle is None:
            break
        if time.perf_counter() > stop:
            info["status"] = "fallback"
            info["fallback_reason"] = "groups still form a cycle at the time limit; using greedy"
            return greedy, False
        ring = {chosen[k] for k, _, _ in cycle}
        program.add_constraint({j: 1.0 for j in ring}, upper=len(ring) - 1)
        cuts += 1
    info.update(objective_us=float(solution.objective), bound_us=float(solution.bound), gap=float(solution.gap))
    return groups, True


def _recompute(graph, candidates, partition, deadline: float, summary: dict):
    """The cover model, started from the partition; its answer replaces the partition only
    when it is strictly cheaper (so `recompute=true` is never worse). Reports both."""
    summary.update(_describe(graph, "no_recompute", partition))
    summary["objective_us_no_recompute"] = summary["objective_us"]
    start = time.perf_counter()
    cover, solution, cuts, status = solve_cover(graph, candidates, partition, max(0.1, deadline - start))
    summary.update(recompute_status=status, recompute_cuts=cuts, recomputed=0,
                   recompute_seconds=time.perf_counter() - start)
    if cover is not None:  # an answer that can run: at worst the partition it started from
        summary["objective_us_recompute"] = float(solution.objective)
    cheaper = cover is not None and sum(cover.seconds) * 1e6 < summary["time_us_no_recompute"] * (1 - 1e-9)
    if cover is None or cover.recomputed == 0 or not cheaper:
        return partition, None  # no clones for a tie: the partition is simpler to emit
    summary.update(
        objective_us=float(solution.objective), bound_us=float(solution.bound), gap=float(solution.gap),
        kernels_ilp=len(cover.groups), bytes_ilp=sum(cover.bytes), time_us_ilp=sum(cover.seconds) * 1e6,
        recomputed=cover.recomputed,
    )
    return cover.groups, cover.home


def _describe(graph: FusionGraph, label: str, groups: list[frozenset[int]]) -> dict[str, float | int]:
    return {
        f"kernels_{label}": len(groups),
        f"bytes_{label}": sum(graph.bytes_moved(g) for g in groups),
        f"time_us_{label}": sum(graph.cost(g) for g in groups) * 1e6,
    }


def write_groups(graph: FusionGraph, groups: list[frozenset[int]], home: dict[int, int] | None = None) -> int:
    """Dense group ids in program order, as a `group` attribute on every op; a recomputed
    op is cloned into each extra group (`fusion_recompute.materialize`). Returns the clones."""
    if home is None:
        home = {i: k for k, group in enumerate(groups) for i in group}
    return materialize(graph, groups, home)
