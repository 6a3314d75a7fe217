"""Generated routing traces with skewed popularity and inter-layer affinity.

Random-weight tiny models route almost uniformly, which hides what placement is worth;
trained MoE models do not (MoETuner and ExFlow measure heavy skew and strong layer-to-layer
expert affinity in Mixtral and DeepSeek). This generator states its model so results on it
can be read for what they are:

- popularity: in every layer, expert ranks follow Zipf with exponent `zipf`
  (p(rank r) proportional to r^-zipf), over a random per-layer permutation of expert ids;
- affinity: routing is a Markov chain over layers keyed by the token's top-1 expert. The
  transition matrix is M_l = affinity * A_l + (1 - affinity) * 1 p_(l+1)^T, where row e of
  A_l puts its mass on `fan` experts of layer l+1 (drawn by popularity, weights
  Dirichlet(1)); a token whose top-1 expert in layer l is e draws its top_k experts of
  layer l+1 from row e of M_l without replacement (Gumbel top-k), the first drawn being its
  top-1. Layer 0 draws from p_0. So experts of one affinity set are also co-selected within
  a layer, as ExFlow observes in trained models.

Every parameter, and the seed, is stored in the trace's `params`, and `source` is
"generated". Usage: `python -m benchmarks.expert_traces --layers 32 --experts 64 --out t.json`.
"""

from __future__ import annotations

import argparse

import numpy as np

from passes.experts.trace import ExpertTrace


def zipf_popularity(experts: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, experts + 1) ** exponent
    return (p / p.sum())[rng.permutation(experts)]


def transition(pop_next: np.ndarray, affinity: float, fan: int, rng: np.random.Generator) -> np.ndarray:
    e = len(pop_next)
    a = np.zeros((e, e))
    for row in range(e):
        cols = rng.choice(e, size=min(fan, e), replace=False, p=pop_next)
        a[row, cols] = rng.dirichlet(np.ones(len(cols)))
    return affinity * a + (1.0 - affinity) * pop_next[None, :]


def generate(layers: int = 8, experts: int = 16, top_k: int = 2, tokens: int = 256, calls: int = 8,
             zipf: float = 1.0, affinity: float = 0.7, fan: int = 3, seed: int = 0) -> ExpertTrace:
    """`calls` forward passes of `tokens` tokens each, routed per the model above."""
    rng = np.random.default_rng(seed)
    pops = [zipf_popularity(experts, zipf, rng) for _ in range(layers)]
    mats = [transition(pops[l + 1], affinity, fan, rng) for l in range(layers - 1)]
    out = []
    for _ in range(calls):
        routing = np.zeros((layers, tokens, top_k), dtype=np.int64)
        probs = np.broadcast_to(pops[0], (tokens, experts))
        for l in range(layers):
            # Gumbel top-k: the token's k experts, drawn without replacement from its row.
            keys = np.log(np.maximum(probs, 1e-300)) + rng.gumbel(size=(tokens, experts))
            routing[l] = np.argsort(-keys, axis=1)[:, :top_k]
            if l + 1 < layers:
                probs = mats[l][routing[l, :, 0]]
        out.append(routing)
    params = {"zipf": zipf, "affinity": affinity, "fan": fan, "seed": seed, "tokens_per_call": tokens}
    name = f"generated(zipf={zipf}, affinity={affinity}, L={layers}, E={experts}, k={top_k})"
    return ExpertTrace(layers, experts, top_k, out, "generated", name, None, params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("layers", 8), ("experts", 16), ("top-k", 2), ("tokens", 256), ("calls", 8),
                          ("fan", 3), ("seed", 0)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--affinity", type=float, default=0.7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    generate(a.layers, a.experts, a.top_k, a.tokens, a.calls, a.zipf, a.affinity, a.fan, a.seed).save(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
