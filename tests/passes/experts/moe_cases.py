"""Shared small inputs for the expert-placement tests: an IR with two routers, traces, brute force."""

from __future__ import annotations

import itertools

import numpy as np

from passes.experts.cost import Placement, evaluate
from passes.experts.ilp import load_caps
from passes.experts.trace import ExpertTrace


def moe_ir(layers: int = 2, experts: int = 4, tokens: int = 8, k: int = 2) -> str:
    """Routers as capture writes them: kiln.softmax then kiln.topk over the last dim."""
    t = f"tensor<{tokens}x{experts}xf32>"
    lines, args, rets = [], [], []
    for l in range(layers):
        args.append(f"%x{l}: {t}")
        lines.append(f'    %p{l} = "kiln.softmax"(%x{l}) <{{dim = -1 : i64}}> : ({t}) -> {t}')
        lines.append(f'    %v{l}, %i{l} = "kiln.topk"(%p{l}) <{{k = {k} : i64, dim = -1 : i64, largest = true}}> : '
                     f"({t}) -> (tensor<{tokens}x{k}xf32>, tensor<{tokens}x{k}xi64>)")
        rets.append(f"%i{l}")
    types = ", ".join([f"tensor<{tokens}x{k}xi64>"] * layers)
    return (f"builtin.module {{\n  func.func @forward({', '.join(args)}) -> ({types}) {{\n" + "\n".join(lines)
            + f"\n    func.return {', '.join(rets)} : {types}\n  }}\n}}\n")


def random_trace(layers: int, experts: int, k: int, tokens: int, calls: int, seed: int) -> ExpertTrace:
    rng = np.random.default_rng(seed)
    pop = rng.dirichlet(np.ones(experts) * 0.5)
    out = []
    for _ in range(calls):
        keys = np.log(pop)[None, None, :] + rng.gumbel(size=(layers, tokens, experts))
        out.append(np.argsort(-keys, axis=2)[:, :, :k])
    return ExpertTrace(layers, experts, k, out, "generated", "random")


def brute_force(trace: ExpertTrace, devices: int, capacity: int) -> float:
    """Minimum modeled objective over every placement within capacity and the load cap."""
    caps = load_caps(trace, devices)
    rows = [a for a in itertools.product(range(devices), repeat=trace.experts)
            if max(np.bincount(a, minlength=devices)) <= capacity]
    best = float("inf")
    for assign in itertools.product(rows, repeat=trace.layers):
        p = Placement.from_assignment(np.array(assign), devices)
        c = evaluate(trace, p)
        if (c.loads.max(axis=1) <= caps + 1e-9).all():
            best = min(best, c.objective)
    return best
