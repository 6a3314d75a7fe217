"""Swap-and-move descent on the exact modeled objective: the term the layer-wise ILP drops.

Why: above 8 experts the layer-wise ILP leaves out the *return* term (the top-1 and the
j-th expert of a token on different devices cost a transfer), because its pairwise
linearization has a useless LP relaxation (x = 1/D makes every pair "together") and HiGHS
stalls on it (`ilp.pair_budget`). On top-2 routing that term is a third of the cross-device
tokens, and the ILP did not reduce it at all (generated traces, D = 4 and 8). The exact
objective of one layer, the others fixed, is small enough to search directly:

    savings(row) = sum_e Own[e, row_e] + Next[e, row_e] + sum_{a<b} P[a, b] [row_a == row_b]
    cost(row)    = constant - savings(row) + LOAD_WEIGHT * max_d load_d(row)

with Own[e, d] the (token, choice) pairs of expert e whose owner is d (layer l-1's top-1
device, or the data-parallel block in layer 0), Next[e, d] the layer-(l+1) choices on d of
tokens whose top-1 is e (they leave from e's device), and P the within-layer top-1 / j-th
pair counts. All three are E x E or E x D matrices built once from the trace, so every swap
(and every move into a free slot) of a layer is priced at once in numpy; the best improving
one is taken until none is left, layer after layer, sweeping until a sweep changes nothing
or time runs out. Capacity and the per-layer load cap (contiguous's busiest device) hold
throughout. It only ever lowers the replayed objective (`cost.evaluate` agrees exactly for
unreplicated placements; tests check it), so it is a descent from the ILP's answer, not a
replacement: the ILP still decides the linear part optimally and reports its bound.
"""

from __future__ import annotations

import time

import numpy as np

from passes.experts.cost import LOAD_WEIGHT, homes
from passes.experts.trace import ExpertTrace


class LayerTerms:
    """The count matrices of a trace: Own of layer 0, pairs P_l, hops H_l (top-1 at l -> choice at l+1)."""

    def __init__(self, trace: ExpertTrace, devices: int) -> None:
        e, self.layers, self.devices = trace.experts, trace.layers, devices
        self.own0 = np.zeros((e, devices))
        self.pairs = np.zeros((trace.layers, e, e))
        self.hops = np.zeros((max(trace.layers - 1, 0), e, e))
        self.loads = np.zeros((trace.layers, e))
        for c in trace.calls:
            k = c.shape[2]
            np.add.at(self.own0, (c[0].reshape(-1), np.repeat(homes(c.shape[1], devices), k)), 1.0)
            for l in range(trace.layers):
                self.loads[l] += np.bincount(c[l].reshape(-1), minlength=e)
                for j in range(1, k):
                    np.add.at(self.pairs[l], (c[l][:, 0], c[l][:, j]), 1.0)
                if l + 1 < trace.layers:
                    for j in range(k):
                        np.add.at(self.hops[l], (c[l][:, 0], c[l + 1][:, j]), 1.0)
        self.pairs = self.pairs + self.pairs.transpose(0, 2, 1)  # symmetric, zero diagonal

    def linear(self, assign: np.ndarray, l: int) -> np.ndarray:
        """Own + Next for layer l given the other layers' rows: [experts, devices]."""
        onehot = np.eye(self.devices)
        own = self.own0 if l == 0 else self.hops[l - 1].T @ onehot[assign[l - 1]]
        nxt = self.hops[l] @ onehot[assign[l + 1]] if l + 1 < self.layers else 0.0
        return own + nxt


def _best_step(lin: np.ndarray, pairs: np.ndarray, load: np.ndarray, row: np.ndarray, devices: int,
               capacity: int, cap: float) -> tuple[float, tuple[int, int] | None, bool]:
    """The most improving swap (e, f) or move (e, d) of one layer: (delta, step, is_swap)."""
    onehot = np.eye(devices)[row]
    gain = lin + pairs @ onehot  # savings of e on d, partners counted where they are now
    dev_load = np.bincount(row, weights=load, minlength=devices)
    here = gain[np.arange(len(row)), row]
    # Swaps: e (on row_e) <-> f (on row_f).
    g = gain[:, row] - here[:, None]  # e moved to f's device
    sw_gain = g + g.T - 2.0 * pairs
    n1 = dev_load[row][:, None] - load[:, None] + load[None, :]  # e's old device after the swap
    n2 = dev_load[row][None, :] - load[None, :] + load[:, None]
    other = _max_excluding(dev_load, row[:, None], row[None, :])
    sw_max = np.maximum(other, np.maximum(n1, n2))
    sw_delta = -sw_gain + LOAD_WEIGHT * (sw_max - dev_load.max())
    sw_delta[(row[:, None] == row[None, :]) | (sw_max > cap + 1e-9)] = np.inf
    # Moves: e to a device d with a free slot.
    used = np.bincount(row, minlength=devices)
    mv_gain = gain - here[:, None]
    src = dev_load[row][:, None] - load[:, None]
    dst = dev_load[None, :] + load[:, None]
    mv_max = np.maximum(_max_excluding(dev_load, row[:, None], np.arange(devices)[None, :]), np.maximum(src, dst))
    mv_delta = -mv_gain + LOAD_WEIGHT * (mv_max - dev_load.max())
    mv_delta[(row[:, None] == np.arange(devices)[None, :]) | (used[None, :] >= capacity) | (mv_max > cap + 1e-9)] = np.inf
    i, j = np.unravel_index(np.argmin(sw_delta), sw_delta.shape)
    a, b = np.unravel_index(np.argmin(mv_delta), mv_delta.shape)
    if sw_delta[i, j] <= mv_delta[a, b]:
        return float(sw_delta[i, j]), (int(i), int(j)), True
    return float(mv_delta[a, b]), (int(a), int(b)), False


def _max_excluding(dev_load: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """max over devices other than d1 and d2 (broadcast), from the three largest loads."""
    order = np.argsort(-dev_load, kind="stable")
    top = [order[i] if i < len(order) else -1 for i in range(3)]
    vals = [dev_load[t] if t >= 0 else -np.inf for t in top]
    out = np.full(np.broadcast(d1, d2).shape, -np.inf)
    for t, v in reversed(list(zip(top, vals))):  # the first allowed of the top three wins
        if t < 0:
            continue
        out = np.where((d1 != t) & (d2 != t), v, out)
    return out


def busiest(terms: LayerTerms, assign: np.ndarray) -> np.ndarray:
    """[layers]: the busiest device's (token, choice) load in each layer."""
    return np.array([np.bincount(row, weights=load, minlength=terms.devices).max()
                     for row, load in zip(assign, terms.loads)])


def polish(trace: ExpertTrace, assign: np.ndarray, devices: int, capacity: int, caps: np.ndarray,
           deadline: float, terms: LayerTerms | None = None, total: float | None = None) -> tuple[np.ndarray, int]:
    """Descend from `assign` until no swap or move improves, or `deadline` (perf_counter) passes.

    Returns the new assignment and the number of steps taken. Each step lowers the modeled
    objective; capacity and the load cap `caps[l]` hold when they held for `assign`. With
    `total` (`load-cap=total`), the cap is on the sum over layers of the busiest load instead:
    layer l may rise to `total` minus the other layers' busiest loads, so one layer's balance
    can be traded for another's, and the sum holds when it held for `assign`.
    """
    terms = terms or LayerTerms(trace, devices)
    assign = assign.copy()
    steps = 0
    changed = True
    while changed and time.perf_counter() < deadline:
        changed = False
        for l in range(trace.layers):
            if time.perf_counter() >= deadline:
                break
            lin = terms.linear(assign, l)
            while time.perf_counter() < deadline:
                if total is None:
                    cap = float(caps[l])
                else:
                    top = busiest(terms, assign)
                    cap = float(total - top.sum() + top[l])
                delta, step, is_swap = _best_step(lin, terms.pairs[l], terms.loads[l], assign[l], devices,
                                                  capacity, cap)
                if step is None or delta >= -1e-9:
                    break
                if is_swap:
                    e, f = step
                    assign[l, e], assign[l, f] = assign[l, f], assign[l, e]
                else:
                    assign[l, step[0]] = step[1]
                steps, changed = steps + 1, True
    return assign, steps
