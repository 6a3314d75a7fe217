"""Multi-start descent and perturbation search around the layer-wise ILP's answer.

Why: the layer-wise ILP (previous layer fixed, then sweeps with both neighbours fixed) and
`polish.py`'s exact swap descent end in *one* local optimum, the one reachable from the
first sweep's answer. On generated strong-affinity traces at 8 devices that optimum sat
at 29% fewer cross-device tokens than contiguous, and the joint ILP could not say whether
more was reachable (its LP bound is weak). So the search is widened, cheaply, on the exact
replayed objective (`polish.LayerTerms`: every swap of a layer priced at once in numpy):

- starts: the ILP's answer, greedy, round-robin, contiguous, two affinity-chain starts
  (`chains`: each expert of layer l goes, heaviest first, to the device that already holds
  most of its incoming (forward) or outgoing (backward) hop mass, i.e. chains of affine
  experts onto one device, ExFlow's idea as a start) and `randoms` seeded random
  permutations of the contiguous slots;
- a start row that breaks the load cap is replaced by the ILP's row of that layer (which
  holds it), so every start is feasible; each start descends with `polish` to a fixed point;
- then iterated local search from the best: a few random swaps in one to three layers,
  descend again, keep it only if the objective drops; `rounds` at most, or until `deadline`.

The result is never worse than the ILP's answer it started from (that answer is one of the
starts), capacity and the load cap hold throughout, and the draws are seeded, so a run is
repeatable when it is not cut short by the deadline (`rounds_done` says how far it got).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from passes.experts.cost import LOAD_WEIGHT
from passes.experts.polish import LayerTerms, busiest, polish
from passes.experts.trace import ExpertTrace


@dataclass
class SearchResult:
    assign: np.ndarray
    objective: float  # the modeled objective (`cost.evaluate`'s, from the count matrices)
    start: str  # the start whose descent (and perturbations) won
    starts: dict[str, float] = field(default_factory=dict)  # objective after each start's descent
    rounds_done: int = 0
    accepted: int = 0
    seconds: float = 0.0


def objective(terms: LayerTerms, assign: np.ndarray) -> float:
    """The replayed objective of an unreplicated placement, from the count matrices alone."""
    onehot = np.eye(terms.devices)
    own = float((terms.own0 * onehot[assign[0]]).sum())
    hops = sum(float((terms.hops[l] * (onehot[assign[l]] @ onehot[assign[l + 1]].T)).sum())
               for l in range(terms.layers - 1))
    pairs = sum(float((terms.pairs[l] * (onehot[assign[l]] @ onehot[assign[l]].T)).sum()) / 2.0
                for l in range(terms.layers))
    # Every (token, choice) is a dispatch and every non-top-1 choice a return, unless local.
    total = float(terms.loads.sum()) + float(terms.pairs.sum()) / 2.0
    return total - own - hops - pairs + LOAD_WEIGHT * float(busiest(terms, assign).sum())


def within_cap(terms: LayerTerms, assign: np.ndarray, caps: np.ndarray, total: float | None) -> bool:
    top = busiest(terms, assign)
    return bool(top.sum() <= total + 1e-9) if total is not None else bool((top <= caps + 1e-9).all())


def repair(terms: LayerTerms, start: np.ndarray, safe: np.ndarray, caps: np.ndarray,
           total: float | None) -> np.ndarray:
    """`start` with every row over its layer's cap replaced by `safe`'s row (which holds it)."""
    out = start.copy()
    top = busiest(terms, out)
    for l in np.argsort(-(top - caps)):  # worst excess first
        if within_cap(terms, out, caps, total):
            break
        if top[l] > caps[l] + 1e-9 or total is not None:
            out[l] = safe[l]
    return out if within_cap(terms, out, caps, total) else safe.copy()


def chains(terms: LayerTerms, first: np.ndarray, capacity: int, caps: np.ndarray, backward: bool) -> np.ndarray:
    """Affinity clustering: place each layer next to the already placed one, heaviest hop mass first."""
    layers, devices = terms.layers, terms.devices
    experts = terms.loads.shape[1]
    assign = np.zeros((layers, experts), dtype=np.int64)
    order = range(layers - 1, -1, -1) if backward else range(layers)
    for i, l in enumerate(order):
        if i == 0:
            assign[l] = first[l]
            continue
        onehot = np.eye(devices)
        # mass[e, d]: hop tokens between e and the experts of the placed neighbour on d.
        mass = terms.hops[l] @ onehot[assign[l + 1]] if backward else terms.hops[l - 1].T @ onehot[assign[l - 1]]
        used, load = np.zeros(devices, dtype=np.int64), np.zeros(devices)
        placed = np.full(experts, -1)
        for flat in np.argsort(-mass, axis=None, kind="stable"):
            e, d = divmod(int(flat), devices)
            w = terms.loads[l, e]
            if placed[e] < 0 and used[d] < capacity and load[d] + w <= caps[l] + 1e-9:
                placed[e], used[d], load[d] = d, used[d] + 1, load[d] + w
        for e in np.argsort(-terms.loads[l], kind="stable"):  # the rest: least-loaded free device
            if placed[e] < 0:
                d = min((d for d in range(devices) if used[d] < capacity), key=lambda d: (load[d], d))
                placed[e], used[d], load[d] = d, used[d] + 1, load[d] + terms.loads[l, e]
        assign[l] = placed
    return assign


def search(trace: ExpertTrace, ilp_assign: np.ndarray, baselines: dict[str, np.ndarray], devices: int,
           capacity: int, caps: np.ndarray, deadline: float, total: float | None = None, randoms: int = 3,
           rounds: int = 600, seed: int = 0, terms: LayerTerms | None = None) -> SearchResult:
    """Best of every start's descent, then perturbation rounds from it; never worse than `ilp_assign`."""
    began = time.perf_counter()
    terms = terms or LayerTerms(trace, devices)
    rng = np.random.default_rng(seed)
    experts = trace.experts
    slots = np.arange(experts) // -(-experts // devices)
    starts: dict[str, np.ndarray] = {"ilp": ilp_assign, **baselines,
                                     "chains_forward": chains(terms, ilp_assign, capacity, caps, False),
                                     "chains_backward": chains(terms, ilp_assign, capacity, caps, True)}
    for i in range(randoms):
        starts[f"random{i}"] = np.stack([rng.permutation(slots) for _ in range(trace.layers)])
    best, best_obj, best_name, results = ilp_assign.copy(), objective(terms, ilp_assign), "ilp", {}
    for name, start in starts.items():
        if time.perf_counter() >= deadline:
            break
        got, _ = polish(trace, repair(terms, start, ilp_assign, caps, total), devices, capacity, caps, deadline,
                        terms, total)
        results[name] = round(objective(terms, got), 3)
        if results[name] < best_obj - 1e-9:
            best, best_obj, best_name = got, results[name], name
    done = accepted = 0
    layers = trace.layers
    while done < rounds and time.perf_counter() < deadline:
        done += 1
        cand = best.copy()
        for l in rng.choice(layers, size=min(layers, int(rng.integers(1, 4))), replace=False):
            for _ in range(int(rng.integers(1, 4))):
                e, f = rng.choice(experts, size=2, replace=False)
                cand[l, e], cand[l, f] = cand[l, f], cand[l, e]
        if not within_cap(terms, cand, caps, total):
            continue
        cand, _ = polish(trace, cand, devices, capacity, caps, deadline, terms, total)
        obj = objective(terms, cand)
        if obj < best_obj - 1e-9:
            best, best_obj, accepted = cand, obj, accepted + 1
    return SearchResult(best, best_obj, best_name, results, done, accepted, time.perf_counter() - began)
