"""Choosing one format per layer: the integer program, the greedy baseline, brute force.

The problem (HAWQ-V3's bit allocation, with formats instead of bit widths): layer l has
candidate formats j with a sensitivity s[l][j] (how much the model output changes when l
alone is stored in j), exact bytes b[l][j] and modeled latency t[l][j]. Choose x[l][j] in
{0, 1} to

    minimize   sum s[l][j] x[l][j]
    subject to sum_j x[l][j] = 1                     for every layer
               sum b[l][j] x[l][j] <= budget bytes
               sum t[l][j] x[l][j] <= latency budget (optional)

HiGHS solves it through `cost_models.ilp`; the chosen assignment is re-checked against
the byte budget in exact integers, so the budget is never exceeded by a solver
tolerance. The greedy baseline is the usual marginal-cost heuristic: start every layer at
its most accurate format, repeatedly take the downgrade that loses the least sensitivity
per byte saved until the budget holds, then spend what is left on the upgrades that gain
the most. `brute_force` enumerates every assignment; the tests use it on small instances.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field

from cost_models.ilp import IntegerProgram, one_of, solve


class QuantizationError(ValueError):
    """A budget no assignment meets, or options that make no problem; the message says which."""


@dataclass(frozen=True)
class Problem:
    layers: list[str]
    options: list[list[str]]  # candidate format names per layer
    cost: list[list[float]]  # sensitivity per layer per option
    nbytes: list[list[int]]
    budget: int
    latency: list[list[float]] | None = None  # seconds per layer per option
    latency_budget: float | None = None  # seconds

    def min_bytes(self) -> int:
        return sum(min(b) for b in self.nbytes)

    def bytes_of(self, choice: list[int]) -> int:
        return sum(self.nbytes[l][j] for l, j in enumerate(choice))

    def cost_of(self, choice: list[int]) -> float:
        return sum(self.cost[l][j] for l, j in enumerate(choice))

    def latency_of(self, choice: list[int]) -> float:
        return sum(self.latency[l][j] for l, j in enumerate(choice)) if self.latency else 0.0

    def feasible(self, choice: list[int]) -> bool:
        if self.bytes_of(choice) > self.budget:
            return False
        if self.latency_budget is not None and self.latency is not None:
            return self.latency_of(choice) <= self.latency_budget * (1 + 1e-9)
        return True

    def formats(self, choice: list[int]) -> list[str]:
        return [self.options[l][j] for l, j in enumerate(choice)]

    def check(self) -> None:
        if not self.layers:
            return
        if self.min_bytes() > self.budget:
            raise QuantizationError(
                f"quantize: budget of {self.budget} bytes is below the smallest assignment "
                f"({self.min_bytes()} bytes with the smallest format in every layer); raise "
                "budget-bytes / avg-bits or allow smaller formats"
            )


@dataclass
class Solution:
    choice: list[int]
    status: str  # "optimal" | "time_limit" | "fallback" | "heuristic" | "exhaustive"
    seconds: float = 0.0
    info: dict[str, float | int | str] = field(default_factory=dict)


def solve_ilp(problem: Problem, time_limit: float = 10.0) -> Solution:
    """The exact choice; falls back to greedy (status "fallback") when HiGHS finds none."""
    problem.check()
    if not problem.layers:
        return Solution([], "optimal")
    ip = IntegerProgram()
    # Sensitivities can be 1e-9; scale so the objective is O(1e6) and HiGHS's absolute
    # gap tolerance (1e-6) stays meaningless next to it.
    top = sum(max(c) for c in problem.cost)
    scale = 1e6 / top if top > 1e-200 else 1.0  # (denormal sensitivities are zeros)
    var: list[list[int]] = []
    for l, costs in enumerate(problem.cost):
        var.append([ip.add_var(c * scale, name=f"x_{l}_{j}") for j, c in enumerate(costs)])
        one_of(ip, var[l])
    # Bytes above each layer's smallest option keep the coefficients small and exact.
    base = problem.min_bytes()
    ip.add_constraint(
        {var[l][j]: float(b - min(bs)) for l, bs in enumerate(problem.nbytes) for j, b in enumerate(bs)},
        upper=float(problem.budget - base),
    )
    if problem.latency is not None and problem.latency_budget is not None:
        lat_base = sum(min(t) for t in problem.latency)
        ip.add_constraint(
            {var[l][j]: (t - min(ts)) * 1e6 for l, ts in enumerate(problem.latency) for j, t in enumerate(ts)},
            upper=(problem.latency_budget - lat_base) * 1e6,
        )
    result, rounds = _solve_exactly(ip, time_limit)
    info: dict[str, float | int | str] = {"variables": ip.num_vars, "solve_seconds": result.seconds,
                                           "refinements": rounds}
    if result.has_solution:
        choice = _polish(problem, [max(range(len(v)), key=lambda j, v=v: result.values[v[j]]) for v in var])
        if problem.feasible(choice):
            info["gap"] = float(result.gap or 0.0)
            return Solution(choice, result.status, result.seconds, info)
        info["fallback_reason"] = "the solver's assignment broke the budget after rounding"
    else:
        info["fallback_reason"] = f"solver status {result.status} with no solution"
    greedy = solve_greedy(problem)
    return Solution(greedy.choice, "fallback", result.seconds, {**info, **greedy.info})


def _polish(problem: Problem, choice: list[int]) -> list[int]:
    """Per layer, the lowest-sensitivity option using no more bytes (and no more modeled
    time): differences below the solver's tolerances (1e-9 of the objective) still count."""
    out = []
    for l, j in enumerate(choice):
        ok = [k for k in range(len(problem.options[l])) if problem.nbytes[l][k] <= problem.nbytes[l][j]
              and (problem.latency is None or problem.latency[l][k] <= problem.latency[l][j])]
        out.append(min(ok, key=lambda k, l=l: (problem.cost[l][k], k != j)))
    return out


def _solve_exactly(ip: IntegerProgram, time_limit: float):
    """Solve, then close HiGHS's default 1e-4 relative gap: while the incumbent is not proven
    optimal, ask for an assignment at least 1e-9 (relative) better; "infeasible" is the
    proof. The helper's solver options are shared by every pass, so the tightening is
    done here, through constraints, rather than by changing them."""
    deadline = time.perf_counter() + time_limit
    result = solve(ip, time_limit=time_limit)
    rounds = 0
    while result.has_solution and (result.gap or 0.0) > 0 and rounds < 20:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        objective = float(result.objective)
        tighter = IntegerProgram(list(ip.costs), list(ip.lower), list(ip.upper), list(ip.rows), list(ip.names))
        tighter.add_constraint({j: c for j, c in enumerate(ip.costs) if c}, upper=objective - max(1e-9 * abs(objective), 1e-9))
        better = solve(tighter, time_limit=left)
        rounds += 1
        if better.status == "infeasible":
            result = dataclasses.replace(result, gap=0.0, bound=result.objective, status="optimal",
                                         seconds=result.seconds + better.seconds)
            break
        if not better.has_solution:
            break
        result = dataclasses.replace(better, seconds=result.seconds + better.seconds)
    return result, rounds


def solve_greedy(problem: Problem) -> Solution:
    """Marginal-cost downgrades until the byte budget holds, then best-gain upgrades."""
    problem.check()
    n = len(problem.layers)
    choice = [min(range(len(c)), key=lambda j, l=l: (problem.cost[l][j], problem.nbytes[l][j])) for l, c in enumerate(problem.cost)]
    total = problem.bytes_of(choice)
    while total > problem.budget:
        best: tuple[float, int, int] | None = None
        for l in range(n):
            cur = choice[l]
            for j, b in enumerate(problem.nbytes[l]):
                saved = problem.nbytes[l][cur] - b
                if saved > 0:
                    ratio = (problem.cost[l][j] - problem.cost[l][cur]) / saved
                    if best is None or ratio < best[0]:
                        best = (ratio, l, j)
        assert best is not None  # check() guarantees the all-smallest assignment fits
        _, l, j = best
        total += problem.nbytes[l][j] - problem.nbytes[l][choice[l]]
        choice[l] = j
    while True:
        best_gain: tuple[float, int, int] | None = None
        for l in range(n):
            cur = choice[l]
            for j, c in enumerate(problem.cost[l]):
                gain = problem.cost[l][cur] - c
                fits = total - problem.nbytes[l][cur] + problem.nbytes[l][j] <= problem.budget
                if gain > 0 and fits and (best_gain is None or gain > best_gain[0]):
                    best_gain = (gain, l, j)
        if best_gain is None:
            break
        _, l, j = best_gain
        total += problem.nbytes[l][j] - problem.nbytes[l][choice[l]]
        choice[l] = j
    info: dict[str, float | int | str] = {}
    if problem.latency_budget is not None and not problem.feasible(choice):
        info["greedy_note"] = "greedy ignores the latency budget and misses it"
    return Solution(choice, "heuristic", 0.0, info)


def brute_force(problem: Problem) -> Solution:
    """Every assignment (for small problems: the product of option counts)."""
    problem.check()
    sizes = [len(o) for o in problem.options]
    if math.prod(sizes) > 2_000_000:
        raise QuantizationError(f"brute force over {math.prod(sizes)} assignments is too many")
    best: tuple[float, list[int]] | None = None
    for combo in itertools.product(*[range(s) for s in sizes]):
        choice = list(combo)
        if problem.feasible(choice):
            c = problem.cost_of(choice)
            if best is None or c < best[0]:
                best = (c, choice)
    if best is None:
        raise QuantizationError("no assignment meets the budgets")
    return Solution(best[1], "exhaustive")
