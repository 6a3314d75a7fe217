"""The one integer-programming helper every decision pass uses (HiGHS through highspy).

A pass states binary/integer (or continuous) variables, linear constraints and a linear objective; the
helper solves under a time limit, deterministically (fixed seed, one thread), and returns
status, objective, best bound and gap, so every report can say how good the answer is.
A time-out with an incumbent returns it with status "time_limit"; without one, the pass
falls back to its heuristic and says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np

INF = highspy.kHighsInf


@dataclass
class IntegerProgram:
    """minimize c.x subject to lo <= A x <= hi, variables in [lb, ub], integral unless marked.

    Continuous variables let a pass state a max() of linear terms exactly (an epigraph:
    t >= a, t >= b, minimize t), as the fusion pass does for a roofline time.
    """

    costs: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    rows: list[tuple[dict[int, float], float, float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)

    def add_var(
        self, cost: float, lower: float = 0.0, upper: float = 1.0, name: str = "", integer: bool = True
    ) -> int:
        self.costs.append(float(cost))
        self.integer.append(integer)
        self.lower.append(float(lower))
        self.upper.append(float(upper))
        self.names.append(name or f"x{len(self.costs) - 1}")
        return len(self.costs) - 1

    def add_constraint(self, coeffs: dict[int, float], lower: float = -INF, upper: float = INF) -> None:
        self.rows.append((coeffs, float(lower), float(upper)))

    @property
    def num_vars(self) -> int:
        return len(self.costs)


@dataclass(frozen=True)
class Solution:
    status: str  # "optimal" | "time_limit" | "infeasible" | "error"
    objective: float | None
    bound: float | None
    gap: float | None
    values: tuple[float, ...]
    seconds: float

    @property
    def has_solution(self) -> bool:
        return self.objective is not None and len(self.values) > 0

    def chosen(self, threshold: float = 0.5) -> list[int]:
        return [i for i, v in enumerate(self.values) if v > threshold]


def solve(
    program: IntegerProgram,
    time_limit: float = 10.0,
    seed: int = 0,
    initial: Sequence[float] | None = None,
    rel_gap: float | None = None,
) -> Solution:
    """Solve with HiGHS; never raises for solver trouble (status says what happened).

    `initial`, a feasible value for every variable, is handed to HiGHS as the first
    incumbent, so a time-out still returns something at least that good. `rel_gap` overrides
    HiGHS's 1e-4 relative gap for "optimal", for passes whose objectives differ by less.
    """
    start = time.perf_counter()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("random_seed", int(seed))
    h.setOptionValue("threads", 1)
    if rel_gap is not None:
        h.setOptionValue("mip_rel_gap", float(rel_gap))
    n = program.num_vars
    if n == 0:
        return Solution("optimal", 0.0, 0.0, 0.0, (), 0.0)
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = len(program.rows)
    lp.col_cost_ = np.array(program.costs, dtype=np.float64)
    lp.col_lower_ = np.array(program.lower, dtype=np.float64)
    lp.col_upper_ = np.array(program.upper, dtype=np.float64)
    lp.row_lower_ = np.array([r[1] for r in program.rows], dtype=np.float64)
    lp.row_upper_ = np.array([r[2] for r in program.rows], dtype=np.float64)
    starts, index, value = [], [], []
    columns: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for r, (coeffs, _, _) in enumerate(program.rows):
        for j, a in coeffs.items():
            columns[j].append((r, a))
    for col in columns:
        starts.append(len(index))
        for r, a in col:
            index.append(r)
            value.append(a)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.array(starts + [len(index)], dtype=np.int32)
    lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(value, dtype=np.float64)
    kinds = highspy.HighsVarType
    integer = program.integer + [True] * (n - len(program.integer))  # built without add_var: all integer
    lp.integrality_ = [kinds.kInteger if i else kinds.kContinuous for i in integer]
    h.passModel(lp)
    if initial is not None:
        given = highspy.HighsSolution()
        given.col_value = [float(v) for v in initial]
        h.setSolution(given)
    h.run()
    status = h.getModelStatus()
    seconds = time.perf_counter() - start
    info = h.getInfo()
    has_primal = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = tuple(h.getSolution().col_value) if has_primal else ()
    objective = float(info.objective_function_value) if has_primal else None
    bound = float(info.mip_dual_bound) if has_primal else None
    gap = float(info.mip_gap) if has_primal else None
    if status == highspy.HighsModelStatus.kOptimal:
        name = "optimal"
    elif status == highspy.HighsModelStatus.kTimeLimit:
        name = "time_limit"
    elif status == highspy.HighsModelStatus.kInfeasible:
        name = "infeasible"
    else:
        name = "error"
    return Solution(name, objective, bound, gap, values, seconds)


def one_of(program: IntegerProgram, variables: Sequence[int]) -> None:
    """Exactly one of `variables` is 1 (set partitioning row)."""
    program.add_constraint({v: 1.0 for v in variables}, 1.0, 1.0)
