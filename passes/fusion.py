"""`fuse`: choose which ops share a kernel with an exact solver over a roofline cost model.

Set partitioning: every candidate group (`fusion_groups.py`) gets a binary variable and
its modeled time (`cost_models.roofline`: a group moves only its external inputs and
outputs); each op must be covered by exactly one chosen group; minimize total time. HiGHS
solves it under `time-limit`. Inductor-style greedy merging (`fusion_greedy.py`) is always
computed as the baseline, and is the answer when the solver times out without a solution
or when `solver=greedy`.

The decision is written on the IR: every kiln op gets a `group` attribute (dense ids in
program order), and the module gets a `kiln.fusion` dictionary with what was chosen and
what the alternatives cost (none / greedy / ilp: kernels, bytes, modeled time; solver
status, objective, bound, gap, seconds).
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
from passes.fusion_groups import CandidateLimit, FusionRules, enumerate_candidates
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
        decision = decide(graph, rules, self.solver, self.time_limit)
        write_groups(graph, decision.groups)
        op.attributes["kiln.fusion"] = decision.as_attr()


@dataclass
class Decision:
    groups: list[frozenset[int]]
    summary: dict[str, float | int | str]

    def as_attr(self) -> DictionaryAttr:
        def attr(v):
            if isinstance(v, str):
                return StringAttr(v)
            if isinstance(v, int):
                return IntegerAttr(v, i64)
            return FloatAttr(float(v), f64)

        return DictionaryAttr({k: attr(v) for k, v in self.summary.items()})


def decide(graph: FusionGraph, rules: FusionRules, solver: str, time_limit: float) -> Decision:
    none = [frozenset([i]) for i in range(len(graph))]
    start = time.perf_counter()
    greedy = greedy_groups(graph, rules) if solver != "none" else none
    greedy_s = time.perf_counter() - start
    summary: dict[str, float | int | str] = {"solver": solver, "ops": len(graph)}
    for label, groups in (("none", none), ("greedy", greedy)):
        summary.update(_describe(graph, label, groups))
    summary["greedy_seconds"] = greedy_s
    chosen = none if solver == "none" else greedy
    if solver == "ilp" and len(graph):
        chosen, info = _solve_ilp(graph, rules, greedy, time_limit)
        summary.update(info)
        summary.update(_describe(graph, "ilp", chosen))
    summary["chosen"] = solver if summary.get("status", "optimal") != "fallback" else "greedy"
    return Decision(sorted(chosen, key=min), summary)


def _solve_ilp(graph: FusionGraph, rules: FusionRules, greedy: list[frozenset[int]], time_limit: float):
    start = time.perf_counter()
    max_group, note = rules.max_group, ""
    deadline = start + time_limit / 2  # leave the solver at least half of the budget
    while True:
        try:
            candidates = enumerate_candidates(graph, rules, deadline if max_group > 1 else None)
            break
        except CandidateLimit as why:  # too many to enumerate in time: smaller groups, and say so
            max_group -= 1
            rules = FusionRules(max_group, rules.fuse_contractions, rules.multi_reduction, rules.max_candidates)
            deadline = time.perf_counter() + time_limit / 4
            note = f"{why}; max-group lowered to {max_group}"
    program = IntegerProgram()
    covering: list[list[int]] = [[] for _ in range(len(graph))]
    for group in candidates:
        var = program.add_var(graph.cost(group) * 1e6)  # microseconds keep HiGHS's tolerances meaningful
        for i in group:
            covering[i].append(var)
    for rows in covering:
        one_of(program, rows)
    enumerate_s = time.perf_counter() - start
    solution = solve(program, time_limit=max(0.1, time_limit - enumerate_s))
    info: dict[str, float | int | str] = {
        "status": solution.status,
        "candidates": len(candidates),
        "solve_seconds": solution.seconds,
        "enumerate_seconds": enumerate_s,
    }
    if note:
        info["note"] = note
    if not solution.has_solution:
        info["status"] = "fallback"
        info["fallback_reason"] = f"solver status {solution.status} with no solution; using greedy"
        return greedy, info
    info["objective_us"] = float(solution.objective)
    info["bound_us"] = float(solution.bound)
    info["gap"] = float(solution.gap)
    return [candidates[j] for j in solution.chosen()], info


def _describe(graph: FusionGraph, label: str, groups: list[frozenset[int]]) -> dict[str, float | int]:
    return {
        f"kernels_{label}": len(groups),
        f"bytes_{label}": sum(graph.bytes_moved(g) for g in groups),
        f"time_us_{label}": sum(graph.cost(g) for g in groups) * 1e6,
    }


def write_groups(graph: FusionGraph, groups: list[frozenset[int]]) -> None:
    """Dense group ids in program order, as a `group` attribute on every op."""
    for gid, group in enumerate(sorted(groups, key=min)):
        for i in group:
            graph.ops[i].attributes["group"] = IntegerAttr(gid, i64)
