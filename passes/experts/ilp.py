"""The expert-placement ILP, in both forms, through the one helper `cost_models/ilp.py`.

Variables: x[l,e,d] = 1 when expert e of layer l lives on device d. Each expert has one
device; each device at most `capacity` experts; m_l >= the (token, choice) load of every
device in layer l, capped by the contiguous baseline's busiest load in that layer (a cap
relative to a feasible baseline: a fixed 1.1x-of-mean cap is infeasible under skew).

Costs are those of `cost.py`, counted as savings against "everything remote":
- dispatch: a (token, choice) is local when its expert sits on the token's owner. In
  layer 0 the owner is known (data-parallel blocks), so the saving N[e,d] x[e,d] is
  linear; in layer l > 0 the owner is the device of the token's layer l-1 top-1 expert,
  a product of two placements, linearized by u <= 1 - x[l-1,e',d] + x[l,e,d] for all d
  (u can be 1 only when both sit on one device; the objective pushes it up);
- return: the top-1 and the j-th expert of a token on one device save a transfer, the
  same pairwise linearization s <= 1 - x[l,e,d] + x[l,f,d] within the layer;
- load: LOAD_WEIGHT x m_l.

`solve_layerwise` fixes layer l-1 before solving layer l, so the owner is known and every
inter-layer term becomes linear in x (as the issue asks: scale first); `solve_joint` states
all layers at once, warm-started, and reports its gap at the time limit. Both finish with
`polish.py`'s exact swap descent, which prices the return term the layer-wise form leaves out
above 8 experts; it only lowers the objective, so bounds stay valid.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cost_models.ilp import IntegerProgram, Solution, one_of, solve
from passes.experts.cost import LOAD_WEIGHT, Placement, evaluate, expert_loads, homes
from passes.experts.polish import polish
from passes.experts.trace import ExpertTrace


@dataclass
class IlpResult:
    placement: Placement
    status: str  # optimal | time_limit | fallback
    bound: float | None  # lower bound on the modeled objective (layer-wise: given earlier layers)
    gap: float | None
    seconds: float
    layers_fallback: list[int] = field(default_factory=list)
    variables: int = 0
    rows: int = 0
    first_sweep_seconds: float = 0.0  # layer-wise: the form alone (before sweeps and polish)
    polish_steps: int = 0  # swaps/moves `polish.py` took after the solver (each lowered the objective)


def load_caps(trace: ExpertTrace, devices: int) -> np.ndarray:
    """Per layer, the contiguous placement's busiest device load: the ILP may not exceed it."""
    per = -(-trace.experts // devices)
    loads = expert_loads(trace)
    dev = np.arange(trace.experts) // per
    return np.array([np.bincount(dev, weights=row, minlength=devices).max() for row in loads])


def _quiet_solve(program: IntegerProgram, time_limit: float, initial: list[float] | None,
                 rel_gap: float | None = None) -> Solution:
    # highspy 1.12 prints a stray line on fd 1 during some MIP solves (ENVIRONMENT.md).
    with open(os.devnull, "w") as null, contextlib.ExitStack() as stack:
        saved = os.dup(1)
        stack.callback(os.close, saved)
        os.dup2(null.fileno(), 1)
        stack.callback(os.dup2, saved, 1)
        return solve(program, time_limit=time_limit, initial=initial, rel_gap=rel_gap)


class _Layer:
    """Variables and rows of one layer: x, within-layer pairs, the load epigraph."""

    def __init__(self, prog: IntegerProgram, l: int, experts: int, devices: int, capacity: int,
                 load: np.ndarray, cap: float, pairs: Counter) -> None:
        self.x = [[prog.add_var(0.0, name=f"x{l}_{e}_{d}") for d in range(devices)] for e in range(experts)]
        for e in range(experts):
            one_of(prog, self.x[e])
        for d in range(devices):
            prog.add_constraint({self.x[e][d]: 1.0 for e in range(experts)}, upper=capacity)
        self.m = prog.add_var(LOAD_WEIGHT, 0.0, float(cap), name=f"m{l}", integer=False)
        for d in range(devices):
            row = {self.x[e][d]: float(load[e]) for e in range(experts) if load[e]}
            row[self.m] = -1.0
            prog.add_constraint(row, upper=0.0)
        self.pairs = _together(prog, pairs, self.x, self.x, devices, f"s{l}")


def _together(prog: IntegerProgram, pairs: Counter, xa: list[list[int]], xb: list[list[int]], devices: int,
              tag: str) -> list[tuple[int, int, int]]:
    """u(a,b) <= 1 - xa[a,d] + xb[b,d] for all d, rewarded by the pair's count."""
    out = []
    for (a, b), n in pairs.items():
        u = prog.add_var(-float(n), 0.0, 1.0, name=f"{tag}_{a}_{b}", integer=False)
        for d in range(devices):
            prog.add_constraint({u: 1.0, xa[a][d]: 1.0, xb[b][d]: -1.0}, upper=1.0)
        out.append((a, b, u))
    return out


def heaviest(pairs: Counter, budget: int | None) -> tuple[Counter, int]:
    """The `budget` most frequent pairs (all when None) and the count left out.

    Left-out pairs are modeled as always remote, so the ILP's objective is an upper bound on
    the true one by at most the left-out count; the reported bound subtracts it to stay valid.
    """
    if budget is None or len(pairs) <= budget:
        return pairs, 0
    kept = Counter(dict(pairs.most_common(budget)))
    return kept, sum(pairs.values()) - sum(kept.values())


def _intra_pairs(call_layer: np.ndarray) -> Counter:
    c: Counter = Counter()
    for j in range(1, call_layer.shape[1]):
        for a, b in zip(call_layer[:, 0].tolist(), call_layer[:, j].tolist()):
            if a != b:
                c[(min(a, b), max(a, b))] += 1
    return c


def _initial(prog: IntegerProgram, layers: list[_Layer], layer_ids: list[int], assign: np.ndarray,
             loads: np.ndarray, inter: list[tuple[int, int, int, int]]) -> list[float]:
    v = [0.0] * prog.num_vars
    for lay, l in zip(layers, layer_ids):
        for e, row in enumerate(lay.x):
            v[row[assign[l, e]]] = 1.0
        v[lay.m] = float(np.bincount(assign[l], weights=loads[l], minlength=len(lay.x[0])).max())
        for a, b, u in lay.pairs:
            v[u] = float(assign[l, a] == assign[l, b])
    for la, a, b, u in inter:
        v[u] = float(assign[la, a] == assign[la + 1, b])
    return v


def _gap(sol: Solution, constant: float) -> float:
    """Relative gap on the whole modeled objective (HiGHS's own is relative to the savings)."""
    if sol.bound is None or sol.objective is None:
        return 0.0
    total = constant + sol.objective
    return max(0.0, (sol.objective - sol.bound) / total) if total > 0 else 0.0


def _assignment(sol: Solution, lay: _Layer) -> np.ndarray:
    return np.array([int(np.argmax([sol.values[i] for i in row])) for row in lay.x], dtype=np.int64)


def pair_budget(experts: int) -> int | None:
    """Within-layer pair variables per layer: all up to 8 experts, none above.

    The return term is the only quadratic one left once the previous layer is fixed, and its
    pairwise rows have a useless LP relaxation (x = 1/D makes every pair "together"). On a
    generated 8-layer, 16-expert, 4-device trace, HiGHS solved the layer-wise ILP without
    them to optimality in 1.7 s; with the 16 heaviest pairs it timed out at 8 s (gap 8%) with
    a slightly *worse* modeled objective (20753 vs 20711), with all pairs at 30 s (gap 28%)
    worse still (21226). Small instances keep them all, so the ILP is exact there.
    """
    return None if experts <= 8 else 0


def rel_gap(experts: int, constant: float = 0.0, prog: IntegerProgram | None = None,
            lay: _Layer | None = None) -> float | None:
    """HiGHS's stopping gap: exact up to 8 experts, else 1% of the layer's *modeled* objective.

    HiGHS measures its gap on what the program minimizes (minus the savings S); the report's
    gap (`_gap`) is on the modeled objective (constant - S + load), which is what "1%"
    should mean. Layer 0 shows why it matters: its owners are the data-parallel blocks, so
    every device sees nearly the same tokens, savings differ little between near-symmetric
    placements (531 of 6144 at 64 experts x 8 devices) and proving 1% of the savings took
    2.5 s. With S_max = sum_e max_d (saving of e on d) >= S, stopping at a relative gap of
    0.01 (constant - S_max) / S_max leaves an absolute gap <= 1% of constant - S, so the
    reported gap stays within 1%.
    """
    if experts <= 8:
        return None
    if prog is None or lay is None:
        return 0.01
    s_max = sum(max(-prog.costs[v] for v in row) for row in lay.x)
    return max(0.01, 0.01 * (constant - s_max) / max(1.0, s_max))


def hop_budget(experts: int) -> int | None:
    """Inter-layer pair variables per layer pair in the joint ILP: all up to 8 experts, else 4E."""
    return None if experts <= 8 else 4 * experts


def _layer_program(trace: ExpertTrace, l: int, assign: np.ndarray, devices: int, capacity: int,
                   loads: np.ndarray, cap: float, budget: int | None, with_next: bool) -> tuple:
    """Layer l's ILP with layer l-1 (and, when `with_next`, layer l+1) fixed: linear in x."""
    prog = IntegerProgram()
    pairs, left = heaviest(sum((_intra_pairs(c[l]) for c in trace.calls), Counter()), budget)
    lay = _Layer(prog, l, trace.experts, devices, capacity, loads, cap, pairs)
    local = np.zeros((trace.experts, devices))
    for c in trace.calls:
        own = homes(c.shape[1], devices) if l == 0 else assign[l - 1][c[l - 1][:, 0]]
        np.add.at(local, (c[l].reshape(-1), np.repeat(own, c.shape[2])), 1.0)
        if with_next and l + 1 < trace.layers:
            # The token leaves layer l from its top-1 expert's device; a layer-(l+1) expert
            # already placed on that device saves the hop.
            nxt = assign[l + 1][c[l + 1]]
            np.add.at(local, (np.repeat(c[l][:, 0], c.shape[2]), nxt.reshape(-1)), 1.0)
    for e in range(trace.experts):
        for d in range(devices):
            prog.costs[lay.x[e][d]] = -local[e, d]
    constant = float(sum(c[l].size + c[l][:, 1:].size for c in trace.calls))
    return prog, lay, constant, left


def solve_layerwise(trace: ExpertTrace, devices: int, capacity: int, time_limit: float,
                    warm: Placement, budget: int | None = -1, sweeps: int = 3) -> IlpResult:
    """Layer by layer, earlier layers fixed; a layer without an incumbent keeps `warm`'s row.

    The first sweep is the issue's form (layer l-1 fixed). Later sweeps (while time is left,
    until nothing changes) re-solve each layer with both neighbours fixed, which is still
    linear, and keep a new row only when the replayed objective does not rise. Status, gap
    and bound are the first sweep's (the bound is given the earlier layers, not global).
    """
    start = time.perf_counter()
    loads, caps = expert_loads(trace), load_caps(trace, devices)
    budget = pair_budget(trace.experts) if budget == -1 else budget
    assign = warm.primary().copy()
    statuses, gaps, bound, fallback, nvars, nrows = [], [], 0.0, [], 0, 0
    # Most layers solve in well under their even share; a few (layer 0, whose owners are
    # near-symmetric data-parallel blocks) need several shares, so a layer may take up to 4.
    first_share = time_limit if sweeps <= 1 else 0.8 * time_limit
    for l in range(trace.layers):
        prog, lay, constant, left = _layer_program(trace, l, assign, devices, capacity, loads[l], caps[l],
                                                   budget, False)
        left_s = first_share - (time.perf_counter() - start)
        seconds = max(0.2, min(left_s, 4.0 * left_s / (trace.layers - l)))
        init = _initial(prog, [lay], [l], assign, loads, [])
        sol = _quiet_solve(prog, seconds, init, rel_gap(trace.experts, constant, prog, lay))
        nvars, nrows = nvars + prog.num_vars, nrows + len(prog.rows)
        if sol.has_solution:
            assign[l] = _assignment(sol, lay)
            statuses.append(sol.status)
            gaps.append(_gap(sol, constant))
            bound += constant - left + (sol.bound if sol.bound is not None else sol.objective)
        else:
            fallback.append(l)
            statuses.append("fallback")
    first_seconds = time.perf_counter() - start
    best = evaluate(trace, Placement.from_assignment(assign, devices)).objective
    for _ in range(sweeps - 1):
        changed = False
        for l in range(trace.layers):
            left_s = time_limit - (time.perf_counter() - start)
            if left_s < 0.2:
                break
            prog, lay, constant, _ = _layer_program(trace, l, assign, devices, capacity, loads[l], caps[l], budget,
                                                    True)
            init = _initial(prog, [lay], [l], assign, loads, [])
            sol = _quiet_solve(prog, max(0.2, left_s / trace.layers), init,
                               rel_gap(trace.experts, constant, prog, lay))
            if not sol.has_solution:
                continue
            trial = assign.copy()
            trial[l] = _assignment(sol, lay)
            cost = evaluate(trace, Placement.from_assignment(trial, devices)).objective
            if cost < best - 1e-9:
                assign, best, changed = trial, cost, True
        if not changed:
            break
    # The return term left out above 8 experts (`pair_budget`): exact descent on what is left.
    assign, steps = polish(trace, assign, devices, capacity, caps, start + time_limit)
    placement = Placement.from_assignment(assign, devices)
    status = "optimal" if all(s == "optimal" for s in statuses) else (
        "fallback" if fallback else "time_limit")
    return IlpResult(placement, status, None if fallback else bound, max(gaps) if gaps else None,
                     time.perf_counter() - start, fallback, nvars, nrows, first_seconds, steps)


def solve_joint(trace: ExpertTrace, devices: int, capacity: int, time_limit: float,
                warm: Placement, budget: int | None = -1) -> IlpResult:
    """All layers in one program, warm-started from `warm`; status and gap at the limit."""
    start = time.perf_counter()
    loads, caps = expert_loads(trace), load_caps(trace, devices)
    intra = pair_budget(trace.experts) if budget == -1 else budget
    prog = IntegerProgram()
    layers, left = [], 0
    for l in range(trace.layers):
        pairs, out = heaviest(sum((_intra_pairs(c[l]) for c in trace.calls), Counter()), intra)
        layers.append(_Layer(prog, l, trace.experts, devices, capacity, loads[l], caps[l], pairs))
        left += out
    for c in trace.calls:  # layer 0: owners are the data-parallel blocks
        own = np.repeat(homes(c.shape[1], devices), c.shape[2])
        for e, d in zip(c[0].reshape(-1).tolist(), own.tolist()):
            prog.costs[layers[0].x[e][d]] -= 1.0
    inter: list[tuple[int, int, int, int]] = []
    for l in range(1, trace.layers):
        hop: Counter = Counter()
        for c in trace.calls:
            for j in range(c.shape[2]):
                hop.update(zip(c[l - 1][:, 0].tolist(), c[l][:, j].tolist()))
        hop, out = heaviest(hop, hop_budget(trace.experts) if budget == -1 else budget)
        left += out
        for a, b, u in _together(prog, hop, layers[l - 1].x, layers[l].x, devices, f"u{l}"):
            inter.append((l - 1, a, b, u))
    constant = float(sum(c.size + c[:, :, 1:].size for c in trace.calls))
    warm_assign = warm.primary()
    init = _initial(prog, layers, list(range(trace.layers)), warm_assign, loads, inter)
    seconds = max(0.5, time_limit - (time.perf_counter() - start))
    sol = _quiet_solve(prog, seconds, init)
    if not sol.has_solution:
        return IlpResult(warm, "fallback", None, None, time.perf_counter() - start, list(range(trace.layers)),
                         prog.num_vars, len(prog.rows))
    assign = np.stack([_assignment(sol, lay) for lay in layers])
    assign, steps = polish(trace, assign, devices, capacity, caps, start + time_limit + 1.0)
    placement = Placement.from_assignment(assign, devices)
    if evaluate(trace, placement).objective > evaluate(trace, warm).objective:
        placement = warm  # HiGHS returned something worse than the incumbent it was handed
    bound = constant - left + sol.bound if sol.bound is not None else None
    return IlpResult(placement, sol.status, bound, _gap(sol, constant), time.perf_counter() - start, [],
                     prog.num_vars, len(prog.rows), polish_steps=steps)
