"""The offset ILP (in the spirit of OLLA, Steiner et al. 2022): one arena, smallest size.

Variables (sizes and offsets in ALIGN units):
  o_i  in [0, UB - s_i]   start offset of buffer i (continuous: for fixed orderings the
                          LP optimum is a longest path over integer sizes, so integral)
  x_ij in {0, 1}          for every pair live at a common step: 1 when i sits below j
  A    in [LB, UB]        the arena size
Constraints:
  o_i + s_i <= o_j + M (1 - x_ij)      i below j, or
  o_j + s_j <= o_i + M x_ij            j below i      (no overlap, a big-M disjunction)
  o_i + s_i <= A
Objective: minimize A.

What makes it solvable in practice (ENVIRONMENT.md: without these it stalls):
- M and UB are the best-fit arena (`bestfit.py`): no better plan needs more room;
- LB is the max-live lower bound, stated as A's lower bound, so the dual bound starts there;
- the best-fit plan is the warm start, so a time-out still returns at least best-fit;
- when best-fit already meets the lower bound it is optimal and no ILP is built;
- buffers live with no other buffer sit at 0 and leave the model.
The answer is checked (`check_plan`) before it is used; a plan that fails the check, or no
answer at all, falls back to best-fit and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.ilp import IntegerProgram, solve
from passes.memory.bestfit import PlanError, arena_size, best_fit, check_plan
from passes.memory.lifetimes import Buffer, conflicts, max_live


@dataclass
class OffsetPlan:
    offsets: list[int]  # ALIGN units, by buffer index
    arena: int  # ALIGN units
    best_fit: int
    lower_bound: int
    status: str  # optimal | time_limit | fallback | best-fit
    bound: float
    gap: float
    seconds: float
    variables: int = 0
    pairs: int = 0
    note: str = ""


def plan_offsets(
    buffers: list[Buffer], solver: str = "ilp", time_limit: float = 10.0, shortcut: bool = True
) -> OffsetPlan:
    """`shortcut=False` solves the ILP even when best-fit meets the bound (benchmarks use it
    to time the solver itself)."""
    greedy = best_fit(buffers)
    upper = arena_size(buffers, greedy)
    lower = max_live(buffers)
    if solver == "best-fit":
        return OffsetPlan(greedy, upper, upper, lower, "best-fit", lower, _gap(upper, lower), 0.0)
    if upper <= lower and shortcut:
        return OffsetPlan(greedy, upper, upper, lower, "optimal", lower, 0.0, 0.0,
                          note="best-fit meets the max-live lower bound; no ILP needed")
    pairs = conflicts(buffers)
    program, offset_var, arena_var, order_var = build_program(buffers, pairs, lower, upper)
    start = [0.0] * program.num_vars
    for b in buffers:
        start[offset_var[b.index]] = float(greedy[b.index])
    for (i, j), var in order_var.items():
        start[var] = 1.0 if greedy[i] < greedy[j] else 0.0
    start[arena_var] = float(upper)
    solution = solve(program, time_limit=time_limit, initial=start)
    counts = dict(variables=program.num_vars, pairs=len(pairs))

    def fallback(note: str) -> OffsetPlan:
        return OffsetPlan(greedy, upper, upper, lower, "fallback", lower, _gap(upper, lower),
                          solution.seconds, note=note, **counts)

    if not solution.has_solution:
        return fallback(f"solver status {solution.status} with no solution; using best-fit")
    offsets = [round(solution.values[offset_var[b.index]]) for b in buffers]
    try:
        check_plan(buffers, offsets)
    except PlanError as err:
        return fallback(f"solver plan failed the check ({err}); using best-fit")
    arena = arena_size(buffers, offsets)
    if arena > upper:  # cannot happen with the warm start, but never hand back worse than best-fit
        offsets, arena = greedy, upper
    bound = max(float(lower), float(solution.bound or lower))
    return OffsetPlan(offsets, arena, upper, lower, solution.status, bound, _gap(arena, bound),
                      solution.seconds, **counts)


def build_program(
    buffers: list[Buffer], pairs: list[tuple[int, int]], lower: int, upper: int
) -> tuple[IntegerProgram, dict[int, int], int, dict[tuple[int, int], int]]:
    program = IntegerProgram()
    paired = {i for p in pairs for i in p}
    offset_var: dict[int, int] = {}
    for b in buffers:
        top = max(0, upper - b.size) if b.index in paired else 0
        offset_var[b.index] = program.add_var(0.0, 0.0, float(top), f"o{b.index}", integer=False)
    arena_var = program.add_var(1.0, float(lower), float(upper), "arena", integer=False)
    size = {b.index: b.size for b in buffers}
    big_m = float(upper)
    order_var: dict[tuple[int, int], int] = {}
    for i, j in pairs:
        x = program.add_var(0.0, 0.0, 1.0, f"x{i}_{j}")
        order_var[(i, j)] = x
        oi, oj = offset_var[i], offset_var[j]
        program.add_constraint({oi: 1.0, oj: -1.0, x: big_m}, upper=big_m - size[i])
        program.add_constraint({oj: 1.0, oi: -1.0, x: -big_m}, upper=-float(size[j]))
    for b in buffers:
        program.add_constraint({arena_var: 1.0, offset_var[b.index]: -1.0}, lower=float(b.size))
    return program, offset_var, arena_var, order_var


def _gap(value: float, bound: float) -> float:
    return 0.0 if value <= 0 else max(0.0, (value - bound) / value)
