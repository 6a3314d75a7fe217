"""Replication of hot experts as ILP decisions (EPLB's question, asked of the solver).

Given a placement (each expert's home), layer by layer in order (earlier layers' replicas
fixed, so every token's owner is known), binary z[e, d] = 1 puts one extra copy of expert e
on device d != home(e), with at most `extra` copies per layer, at most one extra per expert,
and no device above `capacity` expert slots. With one extra copy the runtime's split
(`cost.route`: the owner's copy when it holds one, else copy `t mod 2`) is known per
(e, d) before solving, so the ILP's layer terms are exact:

- moved[e, d] = (token, choice) pairs of e owned by d, plus those owned by a third device
  with odd token index: they leave home(e) for d;
- dispatch saved: the pairs of e owned by d (they become local);
- load: device d gains sum_e z[e, d] moved[e, d] and loses what its own experts' copies
  take; m >= every device's load, m <= the layer's load cap (contiguous's busiest), and
  the objective is LOAD_WEIGHT x m minus the dispatches saved.

What it does not price: a copy changes where some tokens' top-1 output is combined, so the
return transfers of this layer and the owners of the next one move too. Every answer is
therefore replayed with `cost.evaluate`, and a layer's copies are kept only when the whole
modeled objective drops, so replication is never worse than none on the modeled objective.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cost_models.ilp import IntegerProgram
from passes.experts.cost import LOAD_WEIGHT, Placement, evaluate, homes, route
from passes.experts.trace import ExpertTrace


@dataclass
class ReplicaResult:
    placement: Placement
    statuses: list[str]  # per layer: optimal | time_limit | kept-none (replay said no) | none-useful
    seconds: float


def _layer_counts(trace: ExpertTrace, placement: Placement, l: int) -> tuple[np.ndarray, np.ndarray]:
    """own[e, d]: pairs of e owned by d; odd[e, d]: pairs of e owned by d with odd token index."""
    e_n, d_n = trace.experts, placement.devices
    own, odd = np.zeros((e_n, d_n)), np.zeros((e_n, d_n))
    for call in trace.calls:
        owner = homes(call.shape[1], d_n)
        for k in range(l):
            owner = route(placement, k, call[k], owner)[:, 0]
        k_n = call.shape[2]
        ex, ow = call[l].reshape(-1), np.repeat(owner, k_n)
        t = np.repeat(np.arange(call.shape[1]), k_n)
        np.add.at(own, (ex, ow), 1.0)
        np.add.at(odd, (ex[t % 2 == 1], ow[t % 2 == 1]), 1.0)
    return own, odd


def _solve_layer(own: np.ndarray, odd: np.ndarray, home: np.ndarray, used: np.ndarray, extra: int,
                 capacity: int, cap: float, time_limit: float) -> tuple[str, dict[int, int]]:
    from passes.experts.ilp import _quiet_solve

    e_n, d_n = own.shape
    load_e = own.sum(axis=1)
    base = np.bincount(home, weights=load_e, minlength=d_n)
    prog = IntegerProgram()
    z: dict[tuple[int, int], int] = {}
    for e in range(e_n):
        for d in range(d_n):
            if d != home[e] and load_e[e] > 0:
                z[e, d] = prog.add_var(-own[e, d], name=f"z{e}_{d}")
    m = prog.add_var(LOAD_WEIGHT, 0.0, float(max(cap, base.max())), name="m", integer=False)
    # moved[e, d]: owned by d, plus a third owner's odd-index pairs (copy 1 of [home, d]).
    third_odd = odd.sum(axis=1)[:, None] - odd - odd[np.arange(e_n), home][:, None]
    moved = own + third_odd
    for d in range(d_n):
        row = {v: float(moved[e, dd]) for (e, dd), v in z.items() if dd == d}
        for (e, dd), v in z.items():
            if home[e] == d:
                row[v] = row.get(v, 0.0) - float(moved[e, dd])
        row[m] = -1.0
        prog.add_constraint(row, upper=-float(base[d]))
        slots = {v: 1.0 for (e, dd), v in z.items() if dd == d}
        if slots:
            prog.add_constraint(slots, upper=float(capacity - used[d]))
    for e in range(e_n):
        mine = {v: 1.0 for (ee, _), v in z.items() if ee == e}
        if mine:
            prog.add_constraint(mine, upper=1.0)
    prog.add_constraint({v: 1.0 for v in z.values()}, upper=float(extra))
    init = [0.0] * prog.num_vars
    init[m] = float(base.max())
    sol = _quiet_solve(prog, time_limit, init)
    if not sol.has_solution:
        return sol.status, {}
    return sol.status, {e: d for (e, d), v in z.items() if sol.values[v] > 0.5}


def replicate_ilp(trace: ExpertTrace, placement: Placement, extra: int, capacity: int, caps: np.ndarray,
                  time_limit: float) -> ReplicaResult:
    """Up to `extra` copies per layer chosen by a per-layer ILP, kept where the replay improves."""
    start = time.perf_counter()
    reps = [[list(r[:1]) for r in row] for row in placement.replicas]
    current = Placement(placement.devices, tuple(tuple(tuple(r) for r in row) for row in reps))
    best = evaluate(trace, current).objective
    statuses = []
    for l in range(trace.layers):
        left = time_limit - (time.perf_counter() - start)
        if extra <= 0 or left <= 0.05:
            statuses.append("not-run")
            continue
        own, odd = _layer_counts(trace, current, l)
        home = np.array([r[0] for r in reps[l]], dtype=np.int64)
        used = np.bincount(home, minlength=placement.devices)
        status, copies = _solve_layer(own, odd, home, used, extra, capacity, float(caps[l]),
                                      max(0.05, left / (trace.layers - l)))
        if not copies:
            statuses.append(status if status != "optimal" else "none-useful")
            continue
        for e, d in copies.items():
            reps[l][e] = [int(home[e]), int(d)]
        trial = Placement(placement.devices, tuple(tuple(tuple(r) for r in row) for row in reps))
        cost = evaluate(trace, trial).objective
        if cost < best - 1e-9:
            current, best = trial, cost
            statuses.append(status)
        else:
            reps[l] = [[int(h)] for h in home]
            statuses.append("kept-none")
    return ReplicaResult(current, statuses, time.perf_counter() - start)
