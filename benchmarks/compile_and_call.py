"""Warm-compile time per zoo model and per-call overhead on tiny graphs (issue 14).

    python -m benchmarks.compile_and_call [--models mlp,cnn,encoder,gpt,moe] [--rounds 30]

Part 1, warm compile: each model is compiled once to fill the caches (a fresh cache dir
under /tmp unless --cache-dir), then compiled again in a *fresh process*, as a second
`kiln compile` would be. The warm compile's time is split into capture (torch.export,
which runs every time: the key is computed from what it captures), and the rest (partition,
conversion, the compile cache's lookup and reload, weight binding). Startup (import torch,
tvm) is not counted, as in `kiln compile`'s report.

Part 2, call overhead: a two-linear model with a branch (the issue's example) and a graph
split by an eager op (the GraphRunner path), eager and Kiln timed interleaved in one process
(blocks of calls, median over rounds), with the load average printed: on a loaded host
only the ratios and differences measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn

WARM = """
import json, sys, time
from compiler.commands.compile_cmd import import_backend_libraries
import_backend_libraries("tvm")  # kiln compile's startup: torch.export, Dynamo, tvm.relax
from compiler.service.client import CacheClient  # imported by kiln compile before its clock
from examples import zoo
from compiler.driver import compile_model
model, inputs = getattr(zoo, sys.argv[1])()
out = []
for _ in range(2):  # the first as in a fresh `kiln compile`, the second in a warm process
    start = time.perf_counter()
    compiled = compile_model(model, inputs, cache_dir=sys.argv[2])
    r = compiled.report
    out.append({"total_s": time.perf_counter() - start, "capture_s": r["capture_s"], "cache": r["compile_cache"]})
print(json.dumps(out))
"""


def warm_compile(name: str, cache_dir: str) -> dict[str, Any]:
    runs = []
    for _ in range(2):  # the first process fills the caches, the second is the warm compile
        done = subprocess.run([sys.executable, "-c", WARM, name, cache_dir], capture_output=True, text=True,
                              check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cold, (warm, again) = runs[0][0], runs[1]
    return {"model": name, "cold_s": cold["total_s"], "warm_s": warm["total_s"], "capture_s": warm["capture_s"],
            "after_capture_s": warm["total_s"] - warm["capture_s"], "hits": warm["cache"]["hits"],
            "again_s": again["total_s"], "again_capture_s": again["capture_s"]}


class Branch(nn.Module):
    """Two linears with a branch: out = b(relu(a(x))) + a(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(32, 32), nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(torch.relu(h)) + h


class Split(nn.Module):
    """A linear, an eager op (cumsum), a linear: two partitions and one eager step."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(32, 32), nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cumsum(self.a(x), dim=1))


def interleaved(fns: dict[str, Any], rounds: int, block: int = 200) -> dict[str, float]:
    """Median microseconds per call of each function, timed in alternating blocks."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(10):
                fn()
            start = time.perf_counter()
            for _ in range(block):
                fn()
            times[name].append((time.perf_counter() - start) / block * 1e6)
    return {name: statistics.median(v) for name, v in times.items()}


def call_overhead(rounds: int, cache_dir: str) -> list[dict[str, Any]]:
    from compiler.driver import compile_model

    rows = []
    for model_cls in (Branch, Split):
        torch.manual_seed(0)
        model, x = model_cls().eval(), torch.randn(4, 32)
        compiled = compile_model(model, (x,), cache_dir=cache_dir)
        torch.set_num_threads(1)  # tiny ops: one thread for both, no OpenMP wake-ups in eager

        def eager(model=model, x=x) -> Any:
            with torch.no_grad():
                return model(x)

        def kiln(compiled=compiled, x=x) -> Any:
            return compiled(x)

        def kiln_no_grad(compiled=compiled, x=x) -> Any:
            with torch.no_grad():
                return compiled(x)

        with torch.no_grad():
            assert torch.allclose(compiled(x), model(x), atol=1e-5, rtol=1e-5)
        med = interleaved({"eager": eager, "kiln": kiln, "kiln_no_grad": kiln_no_grad}, rounds)
        rows.append({"model": model_cls.__name__, "partitions": compiled.report["num_partitions"],
                     **{f"{k}_us": round(v, 2) for k, v in med.items()},
                     "overhead_us": round(med["kiln"] - med["eager"], 2),
                     "ratio": round(med["kiln"] / med["eager"], 3)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,encoder,gpt,moe")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="kiln-bench-cache-")
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, cache {cache_dir}")
    if not args.skip_compile:
        print("| model | cold s | warm s (fresh process) | of it capture | after capture | hits "
              "| warm s (same process again) | of it capture | after capture |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in args.models.split(","):
            r = warm_compile(name, cache_dir)
            print(f"| {name} | {r['cold_s']:.2f} | {r['warm_s']:.3f} | {r['capture_s']:.3f} | "
                  f"{r['after_capture_s']:.3f} | {r['hits']} | {r['again_s']:.3f} | {r['again_capture_s']:.3f} | "
                  f"{r['again_s'] - r['again_capture_s']:.3f} |", flush=True)
    print("| model | partitions | eager us | kiln us | kiln under no_grad us | kiln - eager us | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in call_overhead(args.rounds, cache_dir):
        print(f"| {r['model']} | {r['partitions']} | {r['eager_us']} | {r['kiln_us']} | {r['kiln_no_grad_us']} | "
              f"{r['overhead_us']} | {r['ratio']} |")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
