"""The placement cost model: replay a routing trace on a placement and count what moves.

Execution model (the one `compiler/distributed/experts_runtime.py` runs, so the counts here
are the prediction it is checked against). Attention and the other dense parts are
replicated; each token is *owned* by one device that dispatches it:

- before the first MoE layer a call's tokens are owned in order blocks, token t of T by
  device `t * D // T` (data parallel);
- at layer l the owner sends the token to the device of each of its K experts
  (a *dispatch*; remote unless that device is the owner);
- the outputs go to the device of the token's top-1 expert, which combines them
  (a *return*; remote unless produced there) and becomes the owner for layer l + 1,
  so a token whose experts in layers l and l+1 share a device saves a hop (ExFlow's
  inter-layer affinity);
- a replicated expert serves a token from the owner's replica when there is one, else
  from replica `t mod replicas` (tokens split evenly, as EPLB does).

Load of a device in a layer = (token, choice) pairs it computes; a layer's step is set by
its busiest device. Objective, in token units: remote dispatches + remote returns +
`LOAD_WEIGHT` x sum over layers of the busiest device's load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from passes.experts.trace import ExpertTrace

# One (token, expert) on a layer's busiest device costs 0.2 of a token moved. The load cap
# (never above contiguous's busiest device, `ilp.load_caps`) already holds the load
# side, so the weight is a tie-breaker that still buys balance where it is cheap. At 1.0 the
# ILP spent cross-device tokens on balance far below contiguous's (generated strong-affinity
# trace, D=4: 20% fewer cross tokens than contiguous at max/mean 1.35 against 1.83; at 0.2:
# 31% at 1.66) and HiGHS timed out on the load epigraph (4-6 s against 0.3 s optimal).
LOAD_WEIGHT = 0.2


@dataclass(frozen=True)
class Placement:
    """`replicas[l][e]`: devices holding expert e of layer l; the first one is its home."""

    devices: int
    replicas: tuple[tuple[tuple[int, ...], ...], ...]

    @staticmethod
    def from_assignment(assign: np.ndarray, devices: int) -> Placement:
        return Placement(devices, tuple(tuple((int(d),) for d in row) for row in np.asarray(assign)))

    @property
    def layers(self) -> int:
        return len(self.replicas)

    @property
    def experts(self) -> int:
        return len(self.replicas[0])

    def primary(self) -> np.ndarray:
        return np.array([[reps[0] for reps in row] for row in self.replicas], dtype=np.int64)

    def slots_used(self) -> np.ndarray:
        """[layers, devices]: expert copies each device holds."""
        used = np.zeros((self.layers, self.devices), dtype=np.int64)
        for l, row in enumerate(self.replicas):
            for reps in row:
                for d in reps:
                    used[l, d] += 1
        return used

    def extra_replicas(self) -> int:
        return int(max(sum(len(r) - 1 for r in row) for row in self.replicas))


def homes(tokens: int, devices: int) -> np.ndarray:
    return (np.arange(tokens) * devices) // tokens


def route(placement: Placement, layer: int, experts: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Device computing each (token, choice): experts [T, K], owner [T] -> [T, K]."""
    row = placement.replicas[layer]
    dev = np.array([reps[0] for reps in row], dtype=np.int64)[experts]
    t = np.arange(experts.shape[0])
    for e, reps in enumerate(row):
        if len(reps) == 1:
            continue
        tok, ch = np.nonzero(experts == e)
        arr = np.array(reps, dtype=np.int64)
        local = (arr[None, :] == owner[tok, None])
        pick = np.where(local.any(1), owner[tok], arr[t[tok] % len(reps)])
        dev[tok, ch] = pick
    return dev


@dataclass(frozen=True)
class Cost:
    dispatched: int  # remote (token, choice) sends owner -> expert device
    returned: int  # remote expert outputs sent to the combining device
    loads: np.ndarray  # [layers, devices] (token, choice) pairs computed
    objective: float

    @property
    def cross(self) -> int:
        return self.dispatched + self.returned

    @property
    def max_mean(self) -> float:
        """Sum of per-layer busiest loads over sum of per-layer mean loads (1.0 = perfectly even)."""
        mean = self.loads.mean(axis=1).sum()
        return float(self.loads.max(axis=1).sum() / mean) if mean else 1.0

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        return {f"{prefix}_cross_tokens": self.cross, f"{prefix}_dispatch_tokens": self.dispatched,
                f"{prefix}_return_tokens": self.returned, f"{prefix}_max_mean_load": round(self.max_mean, 4),
                f"{prefix}_objective": round(self.objective, 3)}


def replay(trace: ExpertTrace, placement: Placement) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per call, per layer: (owner [T], device [T, K]) as the runtime will see them."""
    out = []
    for call in trace.calls:
        owner = homes(call.shape[1], placement.devices)
        steps = []
        for l in range(trace.layers):
            dev = route(placement, l, call[l], owner)
            steps.append((owner, dev))
            owner = dev[:, 0]
        out.append(steps)
    return out


def evaluate(trace: ExpertTrace, placement: Placement) -> Cost:
    d = placement.devices
    loads = np.zeros((trace.layers, d), dtype=np.int64)
    dispatched = returned = 0
    for steps in replay(trace, placement):
        for l, (owner, dev) in enumerate(steps):
            dispatched += int((dev != owner[:, None]).sum())
            returned += int((dev[:, 1:] != dev[:, :1]).sum())
            loads[l] += np.bincount(dev.reshape(-1), minlength=d)
    objective = dispatched + returned + LOAD_WEIGHT * float(loads.max(axis=1).sum())
    return Cost(dispatched, returned, loads, objective)


def expert_loads(trace: ExpertTrace) -> np.ndarray:
    """[layers, experts]: (token, choice) pairs routed to each expert."""
    out = np.zeros((trace.layers, trace.experts), dtype=np.int64)
    for call in trace.calls:
        for l in range(trace.layers):
            out[l] += np.bincount(call[l].reshape(-1), minlength=trace.experts)
    return out
