"""A lower bound on cross-device tokens for *any* placement within capacity: a b-matching.

Why: the joint ILP's LP bound is weak (gap 0.4-0.7 at its limit), so it cannot say whether
a better placement exists. This bound answers a narrower question, valid for every
placement that respects the per-device expert capacity (load cap or not):

    cross = every (token, choice) dispatched + every non-top-1 choice returned - savings,

and every saving is a *pair* of things on one device: (layer-0 expert, the device owning
the token), (layer l-1 top-1 expert, layer-l choice) for a dispatch, (top-1, j-th choice) of
one layer for a return (`polish.LayerTerms`' own0, hops and pairs). In any placement an
expert of layer l shares its device with at most `capacity` experts of layer l-1, at most
`capacity` of layer l+1 and at most `capacity - 1` of its own layer, and a layer-0 expert
with one owning device, which holds at most `capacity` of them. Dropping the rest of the
structure leaves a degree-constrained matching, whose maximum weight bounds the savings
from above. Part of that structure is put back: "same device" is transitive, so within each
window of two consecutive layers (and layer 0 with its owning devices) every triangle
y_uv + y_uw - y_vw <= 1 holds. With the triangles the integer program stalled (no usable
bound in 10 s at 8 layers x 16 experts), so by default its LP relaxation is solved
(`relax=True`), still a valid bound: 2-12 s there, and at 8 devices it is what separates
the reachable from the unreachable (moderate affinity: no placement can have fewer than
74.5% of contiguous's held-out cross tokens; the matching alone said 67.8%). Solved
through `cost_models/ilp.py`; an LP that does not finish gives no bound beyond zero.

Evaluated on a held-out trace, it bounds what any plan, made from any calibration data,
can reach there: if it is above 70% of contiguous's cross tokens, the issue's goal is out
of reach on that trace for that device count, whatever the solver.
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.ilp import IntegerProgram
from passes.experts.ilp import _quiet_solve
from passes.experts.polish import LayerTerms
from passes.experts.trace import ExpertTrace


@dataclass(frozen=True)
class CrossBound:
    bound: float  # no placement within capacity has fewer cross-device tokens on this trace
    status: str
    seconds: float
    variables: int


def cross_lower_bound(trace: ExpertTrace, devices: int, capacity: int, time_limit: float = 10.0,
                      terms: LayerTerms | None = None, triangles: bool = True, relax: bool = True) -> CrossBound:
    terms = terms or LayerTerms(trace, devices)
    layers, experts = trace.layers, trace.experts
    prog = IntegerProgram()
    # y[u, v] = 1: u and v on one device. Nodes: (l, e) experts, ("dev", d) layer-0 owners.
    y: dict[tuple, int] = {}
    degree: dict[tuple, dict[int, float]] = {}

    def var(u: tuple, v: tuple, weight: float, sides: tuple) -> None:
        key = (min(u, v, key=repr), max(u, v, key=repr))
        y[key] = prog.add_var(-float(weight), name=f"y{len(y)}", integer=not relax)
        for node, side in zip((u, v), sides):
            degree.setdefault((node, side), {})[y[key]] = 1.0

    def get(u: tuple, v: tuple) -> int:
        return y[(min(u, v, key=repr), max(u, v, key=repr))]

    for e in range(experts):
        for d in range(devices):
            var((0, e), ("dev", d), terms.own0[e, d], ("own", "own"))
    for l in range(layers):
        for a in range(experts):
            for b in range(a + 1, experts):
                var((l, a), (l, b), terms.pairs[l, a, b], (0, 0))
        if l + 1 < layers:
            for a in range(experts):
                for b in range(experts):
                    var((l, a), (l + 1, b), terms.hops[l, a, b], (1, -1))
    for (node, side), row in degree.items():
        limit = 1 if side == "own" and node[0] != "dev" else capacity - 1 if side == 0 else capacity
        prog.add_constraint(row, upper=float(limit))
    if triangles:  # "same device" is transitive: y_uv + y_uw - y_vw <= 1 within each window
        windows = [[(0, e) for e in range(experts)] + [("dev", d) for d in range(devices)]]
        windows += [[(l, e) for e in range(experts)] + [(l + 1, e) for e in range(experts)]
                    for l in range(layers - 1)]
        seen: set[tuple] = set()
        for nodes in windows:
            for i, u in enumerate(nodes):
                for j in range(i + 1, len(nodes)):
                    for k in range(j + 1, len(nodes)):
                        v, w = nodes[j], nodes[k]
                        if (u, v, w) in seen or ("dev" == u[0] and "dev" == v[0]) or (
                                "dev" == v[0] and "dev" == w[0]) or ("dev" == u[0] and "dev" == w[0]):
                            continue
                        seen.add((u, v, w))
                        uv, uw, vw = get(u, v), get(u, w), get(v, w)
                        for a, b, c in ((uv, uw, vw), (uv, vw, uw), (uw, vw, uv)):
                            prog.add_constraint({a: 1.0, b: 1.0, c: -1.0}, upper=1.0)
    sol = _quiet_solve(prog, time_limit, None)
    everything = float(terms.loads.sum()) + float(terms.pairs.sum()) / 2.0
    if relax:  # an LP: its optimum is the bound; without one, nothing is known beyond "all saved"
        saved = -(sol.objective if sol.status == "optimal" and sol.objective is not None else sum(prog.costs))
    else:
        saved = -(sol.bound if sol.bound is not None else sum(prog.costs))
    return CrossBound(everything - saved, sol.status, sol.seconds, prog.num_vars)
