"""The placements frameworks use, always reported beside the ILP, and hot-expert replication.

- contiguous: expert e on device e // ceil(E / D) (Megatron, DeepSpeed, vLLM's default);
- round-robin: expert e on device e mod D;
- greedy: longest-processing-time load balancing per layer (heaviest expert first onto the
  least-loaded device with a free slot), which is what load-aware placers start from;
- `replicate`: EPLB-style greedy: up to R extra copies per layer of the hottest experts (by
  load per copy) on the least-loaded device with a free slot, kept only where the modeled
  objective improves.
"""

from __future__ import annotations

import numpy as np

from passes.experts.cost import Placement, evaluate, expert_loads
from passes.experts.trace import ExpertTrace


def contiguous(layers: int, experts: int, devices: int) -> Placement:
    per = -(-experts // devices)
    return Placement.from_assignment(np.tile(np.arange(experts) // per, (layers, 1)), devices)


def round_robin(layers: int, experts: int, devices: int) -> Placement:
    return Placement.from_assignment(np.tile(np.arange(experts) % devices, (layers, 1)), devices)


def greedy_layer(load: np.ndarray, devices: int, capacity: int) -> np.ndarray:
    assign = np.zeros(len(load), dtype=np.int64)
    total = np.zeros(devices)
    used = np.zeros(devices, dtype=np.int64)
    for e in sorted(range(len(load)), key=lambda e: (-load[e], e)):
        free = [d for d in range(devices) if used[d] < capacity]
        d = min(free, key=lambda d: (total[d], d))
        assign[e] = d
        total[d] += load[e]
        used[d] += 1
    return assign


def greedy(trace: ExpertTrace, devices: int, capacity: int) -> Placement:
    loads = expert_loads(trace)
    return Placement.from_assignment(np.stack([greedy_layer(row, devices, capacity) for row in loads]), devices)


def baselines(trace: ExpertTrace, devices: int, capacity: int) -> dict[str, Placement]:
    return {
        "contiguous": contiguous(trace.layers, trace.experts, devices),
        "round_robin": round_robin(trace.layers, trace.experts, devices),
        "greedy": greedy(trace, devices, capacity),
    }


def replicate(trace: ExpertTrace, placement: Placement, extra: int, capacity: int) -> Placement:
    """Add up to `extra` replicas per layer, hottest first; keep each only if it lowers the objective."""
    if extra <= 0:
        return placement
    loads = expert_loads(trace)
    reps = [[list(r) for r in row] for row in placement.replicas]
    best = evaluate(trace, placement).objective
    for l in range(placement.layers):
        for _ in range(extra):
            used = np.zeros(placement.devices, dtype=np.int64)
            dev_load = np.zeros(placement.devices)
            for e, r in enumerate(reps[l]):
                for d in r:
                    used[d] += 1
                    dev_load[d] += loads[l, e] / len(r)
            order = sorted(range(placement.experts), key=lambda e: -loads[l, e] / len(reps[l][e]))
            placed = False
            for e in order[:4]:
                free = [d for d in range(placement.devices) if used[d] < capacity and d not in reps[l][e]]
                if not free:
                    continue
                d = min(free, key=lambda d: (dev_load[d], d))
                reps[l][e].append(d)
                trial = _freeze(reps, placement.devices)
                cost = evaluate(trace, trial).objective
                if cost < best - 1e-9:
                    best, placed = cost, True
                    break
                reps[l][e].pop()
            if not placed:
                break
    return _freeze(reps, placement.devices)


def _freeze(reps: list[list[list[int]]], devices: int) -> Placement:
    return Placement(devices, tuple(tuple(tuple(r) for r in row) for row in reps))
