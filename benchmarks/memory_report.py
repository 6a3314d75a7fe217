"""Memory mapping on the zoo: peak intermediate bytes for every planner, and what runs.

For each zoo model, a 24-layer GPT and a sample of the real-model suite (the largest
captured partition of each: HF models may split into several), capture, run the TVM
target's pipeline and then `map-memory`, and read the `kiln.memory` summary: the max-live
lower bound, best-fit (TFLite's greedy by size), the ILP, the ILP after `reorder=true`,
TVM's own plan (`StaticPlanBlockMemory`'s storages for the same kernels) and the bytes one
TVM call really allocates with the arena (from a real build). Eager PyTorch is measured:
every tensor an aten op allocates during one forward is tracked until Python frees it
(`EagerPeak`), and the peak without the outputs is set beside the arena. A second table
times the offset ILP itself with the best-fit shortcut off (the pass skips the ILP when
best-fit meets the lower bound); a third shows the order ILP of `reorder=true`. Modeled numbers only: nothing here is a timing that
needs a quiet machine.
Usage: python -m benchmarks.memory_report [--out benchmarks/results] [--no-tvm] [--models a,b]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from compiler.capture.partition import IGNORED
from compiler.driver import module_decisions
from examples.zoo import ZOO, gpt_layers
from passes import run_pipeline
from passes.memory.lifetimes import ALIGN, lifetimes
from passes.memory.offsets_ilp import plan_offsets

# A sample of the real-model suite (benchmarks/models.py: HF transformers from tiny configs).
REAL_SAMPLE = ("gpt2", "llama", "bert", "vit", "mixtral")


class EagerPeak(TorchDispatchMode):
    """Every storage an aten op allocates, with the moment Python frees its last tensor."""

    def __init__(self, known: set[int]) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}  # storage address -> live tensors on it
        self.size: dict[int, int] = {}
        self.known = known  # inputs and parameters: not intermediates
        self.events: list[tuple[int, int]] = []  # (storage address, +bytes or -bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        gc.collect()  # tensors in reference cycles are freed now, not when the GC happens to run
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > 0:
                key = t.untyped_storage().data_ptr()
                if key in self.known:
                    continue
                if key not in self.refs:
                    self.refs[key], self.size[key] = 0, t.untyped_storage().nbytes()
                    self.events.append((key, self.size[key]))
                self.refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.events.append((key, -self.size.pop(key)))

    def peak(self, excluded: set[int]) -> int:
        """Peak bytes live, leaving out the storages in `excluded` (the outputs)."""
        live = best = 0
        for key, delta in self.events:
            if key not in excluded:
                live += delta
                best = max(best, live)
        return best


def eager_peak(model, inputs) -> tuple[int, int]:
    """(peak of intermediates, peak with the outputs) of one eager forward, measured."""
    known = {t.untyped_storage().data_ptr() for t in [*inputs, *model.parameters(), *model.buffers()]}
    tracker = EagerPeak(known)
    with torch.no_grad(), tracker:
        out = model(*inputs)
    outputs = {t.untyped_storage().data_ptr() for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
    return tracker.peak(outputs), tracker.peak(set())


def capture(model, inputs):
    plan = plan_partitions(from_model(model, inputs))
    part = max(plan.partitions(), key=len)
    return convert_nodes(part, plan.consts, users_outside(part, IGNORED)).program


def plan_row(name: str, model, inputs, pipeline: str, tvm: bool) -> dict:
    row: dict = {"model": name}
    for reorder in (False, True):
        program = capture(model, inputs)
        run_pipeline(program.module, pipeline)
        start = time.perf_counter()
        run_pipeline(program.module, f"map-memory{{reorder={str(reorder).lower()}}}")
        seconds = time.perf_counter() - start
        memory = module_decisions(program.module)["memory"]
        if reorder:
            row.update(ilp_reorder_bytes=memory["arena_bytes"], reorder_offsets_status=memory["status"])
            row.update({k: memory.get(k) for k in (
                "reorder_chosen", "reorder_peak_before_bytes", "reorder_peak_greedy_bytes", "reorder_peak_ilp_bytes",
                "reorder_status", "reorder_objective_bytes", "reorder_bound_bytes", "reorder_gap", "reorder_seconds",
                "reorder_variables")})
            continue
        row.update({k: memory[k] for k in ("buffers", "steps", "lower_bound_bytes", "best_fit_bytes", "arena_bytes",
                                          "no_reuse_bytes", "returned_bytes", "status", "gap", "solve_seconds")})
        row["pass_seconds"] = seconds
        forced = plan_offsets(lifetimes(program.forward).buffers, "ilp", 10.0, shortcut=False)
        row.update(forced_status=forced.status, forced_seconds=forced.seconds, forced_gap=forced.gap,
                   forced_bytes=forced.arena * ALIGN, forced_pairs=forced.pairs, forced_variables=forced.variables)
    if tvm:
        from compiler import compile_model

        compiled = compile_model(model, inputs, target="tvm", pipeline=f"{pipeline},map-memory", use_cache=False)
        planned = [p for p in compiled.report["partitions"] if "memory" in p["decisions"]]
        part = max(planned, key=lambda p: p["num_ops"])  # the partition `capture` took
        memory = part["decisions"]["memory"]
        row.update({k: memory.get(k) for k in ("tvm_plan_bytes", "tvm_allocated_bytes", "tvm_arena_placed",
                                               "tvm_arena_planned")})
    row["eager_peak_bytes"], row["eager_peak_with_outputs_bytes"] = eager_peak(model, inputs)
    return row


def _kib(n) -> str:
    return "n/a" if n is None else f"{n / 1024:,.1f}"


def _pct(a, b) -> str:
    return "n/a" if not a or not b else f"{100 * (a - b) / b:+.1f}%"


def markdown(rows: list[dict], pipeline: str) -> str:
    lines = [
        "# Memory mapping: peak intermediate bytes (KiB) per planner",
        "",
        f"`python -m benchmarks.memory_report` · pipeline `{pipeline},map-memory` · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · torch {torch.__version__}",
        "",
        "Intermediates only (returned values are the caller's); 64-byte aligned. "
        "TVM plan: StaticPlanBlockMemory's storages for the same kernels; TVM with arena: bytes one "
        "call allocates when the arena is used. Eager: measured peak of the storages aten ops "
        "allocate in one forward and Python frees by reference counting, outputs left out "
        "(eager frees each tensor at once; an arena is one static block per call).",
        "",
        "| model | buffers | lower bound | best-fit | ILP | ILP+reorder | ILP vs bound | TVM plan | "
        "TVM with arena | ILP vs TVM plan | eager (measured) | ILP vs eager | status | gap | pass s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['buffers']} | {_kib(r['lower_bound_bytes'])} | {_kib(r['best_fit_bytes'])} | "
            f"{_kib(r['arena_bytes'])} | {_kib(r['ilp_reorder_bytes'])} | "
            f"{_pct(r['arena_bytes'], r['lower_bound_bytes'])} | {_kib(r.get('tvm_plan_bytes'))} | "
            f"{_kib(r.get('tvm_allocated_bytes'))} | {_pct(r['arena_bytes'], r.get('tvm_plan_bytes'))} | "
            f"{_kib(r['eager_peak_bytes'])} | {_pct(r['arena_bytes'], r['eager_peak_bytes'])} | {r['status']} | "
            f"{r['gap']:.3f} | {r['pass_seconds']:.3f} |"
        )
    lines += [
        "",
        "The offset ILP itself (best-fit shortcut off: solved even where best-fit meets the bound), "
        "10 s limit, warm start from best-fit:",
        "",
        "| model | buffers | pairs | variables | status | ILP KiB | gap | solve s |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['buffers']} | {r['forced_pairs']} | {r['forced_variables']} | {r['forced_status']} | "
            f"{_kib(r['forced_bytes'])} | {r['forced_gap']:.3f} | {r['forced_seconds']:.2f} |"
        )
    lines += [
        "",
        ("The order ILP of `reorder=true` (OLLA's lifetime half: a position per step, liveness per "
         "buffer, minimize the peak; warm start from the greedy list scheduler, 5 s limit, the pass's "
         "default). Peaks are max-live KiB with the real lifetimes (in-place writes and views counted); "
         "the ILP's objective and bound are on its model, which leaves in-place writes out:"),
        "",
        "| model | steps | variables | status | objective | bound | gap | solve s | program | greedy | ILP order | chosen |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['steps']} | {r['reorder_variables']} | {r['reorder_status']} | "
            f"{_kib(r['reorder_objective_bytes'])} | {_kib(r['reorder_bound_bytes'])} | {r['reorder_gap']:.3f} | "
            f"{r['reorder_seconds']:.2f} | {_kib(r['reorder_peak_before_bytes'])} | "
            f"{_kib(r['reorder_peak_greedy_bytes'])} | {_kib(r['reorder_peak_ilp_bytes'])} | {r['reorder_chosen']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-tvm", action="store_true", help="skip the TVM builds (TVM plan columns n/a)")
    parser.add_argument("--models", default=",".join([*ZOO, "gpt24", *REAL_SAMPLE]))
    args = parser.parse_args(argv)
    from backends.tvm.pipeline import kiln_pipeline

    pipeline = kiln_pipeline().removesuffix(",map-memory")
    from benchmarks.models import SUITE

    factories = {**ZOO, "gpt24": lambda: gpt_layers(24), **{m.name: m.build for m in SUITE}}
    rows = []
    for name in args.models.split(","):
        model, inputs = factories[name]()
        rows.append(plan_row(name, model, inputs, pipeline, not args.no_tvm))
        print(json.dumps(rows[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=1))
    (args.out / "memory.md").write_text(markdown(rows, pipeline))
    print(markdown(rows, pipeline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
