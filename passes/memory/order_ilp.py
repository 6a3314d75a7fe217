"""The execution order that minimizes peak live memory, exactly (OLLA's lifetime half).

Steps (fused groups) form a DAG; each buffer is made by one step and read by a set of
later steps, and lives from its producer to its last reader (closed interval, as in
`lifetimes.py`). Any topological order computes the same values; they differ in how many
bytes are live at once. Steiner et al. (OLLA, 2022) state the choice as an ILP over
"step s has run by position p" variables; this is that formulation over step positions:

  D[s,p] in {0,1}   step s has run at position <= p   (D[s,p] <= D[s,p+1], D[s,n-1] = 1)
  sum_s D[s,p] = p + 1                                   one step per position
  D[u,p] <= D[d,p-1]                                     a step runs after what it reads
  L[b,p] >= D[s_b,p] - D[c,p-1]   for each reader c      buffer b is live at p (continuous:
  L[b,p] >= D[s_b,p] - D[s_b,p-1] when b has no reader    minimization makes it 0/1)
  M >= sum_b size_b L[b,p]                               the peak
  minimize M

What keeps it small: a step can only sit between its ancestors and its descendants
(position window [#ancestors, n - 1 - #descendants]), so D exists only inside the window
and is a constant 0 / 1 outside; L exists only where b can be live. M is bounded below by
the bytes every step needs at once (its inputs and outputs) and above by the better of
program order and the greedy list scheduler, which is also the warm start; a time-out
returns the incumbent with its gap, and no solution at all falls back to the warm start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cost_models.ilp import IntegerProgram, solve

MAX_VARIABLES = 200_000  # beyond this the model is not built; the greedy order stands


@dataclass(frozen=True)
class OrderProblem:
    """Steps 0..n-1 (0..n-1 is a valid order), their dependencies, and the buffers."""

    num_steps: int
    deps: list[frozenset[int]]  # step -> steps it reads from
    buffers: list[tuple[int, frozenset[int], int]]  # (producer, readers, size)


@dataclass
class OrderResult:
    order: list[int]
    peak: int  # modeled peak of `order`
    status: str  # optimal | time_limit | fallback | too_large | trivial
    bound: float
    gap: float
    seconds: float
    variables: int = 0


def peak(problem: OrderProblem, order: list[int]) -> int:
    """Modeled peak live size of `order` (each buffer from its producer to its last reader)."""
    pos = {s: i for i, s in enumerate(order)}
    delta = [0] * (problem.num_steps + 1)
    for producer, readers, size in problem.buffers:
        start = pos[producer]
        end = max((pos[c] for c in readers), default=start)
        delta[start] += size
        delta[end + 1] -= size
    best = live = 0
    for d in delta:
        live += d
        best = max(best, live)
    return best


def is_topological(problem: OrderProblem, order: list[int]) -> bool:
    pos = {s: i for i, s in enumerate(order)}
    return len(pos) == problem.num_steps and all(pos[d] < pos[u] for u, ds in enumerate(problem.deps) for d in ds)


def greedy_order(problem: OrderProblem) -> list[int]:
    """The list scheduler: among ready steps, the one that frees the most bytes net of what
    it allocates (ties: program order)."""
    made = [0] * problem.num_steps
    reads: list[list[int]] = [[] for _ in range(problem.num_steps)]
    pending = [set(readers) for _, readers, _ in problem.buffers]
    for b, (producer, readers, size) in enumerate(problem.buffers):
        made[producer] += size
        for c in readers:
            reads[c].append(b)
    users: list[set[int]] = [set() for _ in range(problem.num_steps)]
    for u, ds in enumerate(problem.deps):
        for d in ds:
            users[d].add(u)
    waiting = [len(ds) for ds in problem.deps]
    ready = [s for s in range(problem.num_steps) if not waiting[s]]
    order: list[int] = []

    def net(s: int) -> int:
        return made[s] - sum(problem.buffers[b][2] for b in reads[s] if pending[b] == {s})

    while ready:
        s = min(ready, key=lambda t: (net(t), t))
        ready.remove(s)
        order.append(s)
        for b in reads[s]:
            pending[b].discard(s)
        for u in users[s]:
            waiting[u] -= 1
            if not waiting[u]:
                ready.append(u)
    if len(order) != problem.num_steps:
        raise ValueError("map-memory: steps form a cycle; groups must be convex")
    return order


def _windows(problem: OrderProblem) -> tuple[list[int], list[int]]:
    """(earliest, latest) position of each step: #ancestors, n - 1 - #descendants."""
    n = problem.num_steps
    anc = [0] * n
    for s in range(n):  # 0..n-1 is topological
        for d in problem.deps[s]:
            anc[s] |= anc[d] | (1 << d)
    desc = [0] * n
    for s in reversed(range(n)):
        for d in problem.deps[s]:
            desc[d] |= desc[s] | (1 << s)
    return [a.bit_count() for a in anc], [n - 1 - d.bit_count() for d in desc]


def ilp_order(problem: OrderProblem, time_limit: float = 10.0, starts: list[list[int]] | None = None) -> OrderResult:
    """The order of least modeled peak; `starts` (topological orders) seed the solver."""
    begin = time.perf_counter()
    n = problem.num_steps
    candidates = [list(range(n))] + [o for o in (starts or []) if is_topological(problem, o)]
    incumbent = min(candidates, key=lambda o: peak(problem, o))
    upper = peak(problem, incumbent)
    need = [0] * n  # bytes live whenever step s runs: its outputs and its inputs
    for producer, readers, size in problem.buffers:
        need[producer] += size
        for c in readers:
            need[c] += size
    lower = max(need, default=0)
    if n <= 1 or upper <= lower:
        return OrderResult(incumbent, upper, "trivial" if n <= 1 else "optimal", float(upper), 0.0,
                           time.perf_counter() - begin)
    first, last = _windows(problem)
    size_estimate = sum(last[s] - first[s] for s in range(n))
    size_estimate += sum(max((last[c] for c in r), default=last[p]) - first[p] + 1 for p, r, _ in problem.buffers)
    if size_estimate > MAX_VARIABLES:
        return OrderResult(incumbent, upper, "too_large", float(lower), _gap(upper, lower),
                           time.perf_counter() - begin, size_estimate)

    prog = IntegerProgram()
    dvar: dict[tuple[int, int], int] = {}
    for s in range(n):
        for p in range(first[s], last[s]):
            dvar[(s, p)] = prog.add_var(0.0, name=f"D{s}_{p}")
    if not dvar:  # every window is one position: the DAG is a chain, one order exists
        return OrderResult(incumbent, upper, "optimal", float(upper), 0.0, time.perf_counter() - begin)

    def d(s: int, p: int) -> int | None:
        """Variable index of D[s,p], or None when it is a constant (see `dconst`)."""
        return dvar.get((s, p))

    def dconst(s: int, p: int) -> int:
        return 0 if p < first[s] else 1

    def add_row(terms: list[tuple[int, int, int]], lower_bound: float) -> None:
        """sum coef * D[s,p] (+ extra vars) >= lower_bound, constants moved to the bound."""
        row: dict[int, float] = {}
        rhs = lower_bound
        for coef, s, p in terms:
            if s < 0:  # an extra variable: p is its index
                row[p] = row.get(p, 0.0) + coef
            elif p < 0:
                continue  # D[s,-1] = 0
            elif (v := d(s, p)) is not None:
                row[v] = row.get(v, 0.0) + coef
            else:
                rhs -= coef * dconst(s, p)
        if row:
            prog.add_constraint(row, lower=rhs)
        elif rhs > 1e-9:
            raise AssertionError("order ILP: an infeasible constant row")

    for s in range(n):
        for p in range(first[s], last[s] - 1):
            add_row([(1, s, p + 1), (-1, s, p)], 0.0)
    for p in range(n):
        row = {dvar[(s, p)]: 1.0 for s in range(n) if (s, p) in dvar}
        fixed = sum(1 for s in range(n) if (s, p) not in dvar and dconst(s, p))
        if row:
            prog.add_constraint(row, lower=p + 1 - fixed, upper=p + 1 - fixed)
    for u in range(n):
        for dep in problem.deps[u]:
            for p in range(first[u], last[u]):
                add_row([(1, dep, p - 1), (-1, u, p)], 0.0)
    peak_var = prog.add_var(1.0, float(lower), float(upper), "peak", integer=False)
    live_rows: list[dict[int, float]] = [{} for _ in range(n)]
    lvar: dict[tuple[int, int], int] = {}
    for b, (producer, readers, size) in enumerate(problem.buffers):
        end = max((last[c] for c in readers), default=last[producer])
        for p in range(first[producer], end + 1):
            v = prog.add_var(0.0, 0.0, 1.0, f"L{b}_{p}", integer=False)
            lvar[(b, p)] = v
            live_rows[p][v] = float(size)
            for c in readers or [producer]:
                add_row([(1, -1, v), (-1, producer, p), (1, c, p - 1)], 0.0)
    for p in range(n):
        if live_rows[p]:
            prog.add_constraint({peak_var: 1.0, **{v: -c for v, c in live_rows[p].items()}}, lower=0.0)

    start = _warm_start(problem, incumbent, prog.num_vars, dvar, lvar, peak_var, upper)
    solution = solve(prog, time_limit=time_limit, initial=start)
    seconds = time.perf_counter() - begin
    if not solution.has_solution:
        return OrderResult(incumbent, upper, "fallback", float(lower), _gap(upper, lower), seconds, prog.num_vars)
    pos = {s: min([p for p in range(first[s], last[s]) if solution.values[dvar[(s, p)]] > 0.5] + [last[s]])
           for s in range(n)}
    order = sorted(range(n), key=lambda s: (pos[s], s))
    got = peak(problem, order) if is_topological(problem, order) else upper + 1
    if got > upper:  # never hand back worse than the warm start
        order, got = incumbent, upper
    bound = max(float(lower), float(solution.bound if solution.bound is not None else lower))
    if solution.status == "optimal":  # HiGHS proved the objective optimal (gap within 1e-4)
        bound = max(bound, float(solution.objective or 0.0))
    return OrderResult(order, got, solution.status, min(bound, float(got)), _gap(got, bound), seconds,
                       prog.num_vars)


def _warm_start(problem: OrderProblem, order: list[int], count: int, dvar: dict, lvar: dict,
                peak_var: int, value: int) -> list[float]:
    pos = {s: i for i, s in enumerate(order)}
    start = [0.0] * count
    for (s, p), v in dvar.items():
        start[v] = 1.0 if pos[s] <= p else 0.0
    for (b, p), v in lvar.items():
        producer, readers, _ = problem.buffers[b]
        end = max((pos[c] for c in readers), default=pos[producer])
        start[v] = 1.0 if pos[producer] <= p <= end else 0.0
    start[peak_var] = float(value)
    return start


def _gap(value: float, bound: float) -> float:
    return 0.0 if value <= 0 else max(0.0, (value - bound) / value)
