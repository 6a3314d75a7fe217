"""Measured per-kernel times for the HTML report, taken only when a report is asked for.

The whole model is run on the caller's example inputs (the real call arguments), a few
times, with every TVM partition's VM instrumented (`backends/tvm/profile.py`); each kernel
call's median time is attributed to the Kiln step (fused group or single op) that emitted
it. The whole call is timed too, without instruments, so the page can show how much of
it the kernels account for. Backends whose kernels cannot be timed here say why instead
of inventing numbers: the Triton interpreter runs on the CPU in Python, and HLS C
simulation is not the FPGA (its latency is estimated by the HLS pass).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

NOT_MEASURED = {
    "triton": "not measured: Triton kernels run under TRITON_INTERPRET=1 on this CPU (Python), which says nothing "
              "about GPU time",
    "hls": "not measured: the C simulation is not the FPGA; latency per layer is the HLS pass's estimate",
    "eager": "not measured: the eager backend runs PyTorch ops, not Kiln kernels",
}
REPEATS = 5


def measure_kernels(target: str, kernels: Sequence[Any], modules: Sequence[Any], call: Callable[[], Any],
                    repeats: int = REPEATS) -> dict[str, Any]:
    """{"call_ms": whole call, "partitions": [{"calls": [...]} or {"not_measured": why}]}.

    `kernels[i]` is partition i's built kernel and `modules[i]` its optimized IR module."""
    timed = [k for k in kernels if getattr(k, "vm", None) is not None]
    if not timed:
        why = NOT_MEASURED.get(target, f"not measured: the {target} backend exposes no per-kernel timer")
        return {"call_ms": None, "partitions": [{"not_measured": why} for _ in kernels]}
    from backends.tvm.profile import attribute, median_calls, recording

    call()  # warm-up: first-call allocations, lazily packed weights
    whole = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        whole.append(time.perf_counter() - start)
    runs: list[list[list[tuple[str, float]]]] = [[] for _ in kernels]
    for _ in range(repeats):
        per_run: list[list[tuple[str, float]]] = [[] for _ in kernels]
        with ExitStack() as stack:
            for i, k in enumerate(kernels):
                if getattr(k, "vm", None) is not None:
                    stack.enter_context(recording(k.vm, per_run[i]))
            call()
        for i, calls in enumerate(per_run):
            runs[i].append(calls)
    parts: list[dict[str, Any]] = []
    for i, k in enumerate(kernels):
        if getattr(k, "vm", None) is None or not runs[i][0]:
            parts.append({"not_measured": NOT_MEASURED.get(target, "not measured: no per-kernel timer")})
            continue
        calls = median_calls(runs[i])
        parts.append({"calls": attribute(modules[i], calls),
                      "vm_overhead_us": sum(s for sym, s in calls if sym.startswith("vm.builtin.")) * 1e6})
    return {"call_ms": statistics.median(whole) * 1e3, "repeats": repeats, "partitions": parts}


def measured_by_kernel(measured: dict[str, Any] | None, part: int, multi: bool) -> dict[str, float]:
    """Report kernel name ("group 4", "p1 group 4", "op #12") -> measured microseconds."""
    out: dict[str, float] = {}
    if not measured:
        return out
    parts = measured.get("partitions") or []
    if part >= len(parts):
        return out
    prefix = f"p{part} " if multi else ""
    for row in parts[part].get("calls") or []:
        if "group" in row:
            key = f"{prefix}group {row['group']}"
        elif row.get("op_index") is not None:
            key = f"{prefix}op #{row['op_index']}"
        else:
            key = f"{prefix}unattributed {row['symbol']}"
        out[key] = out.get(key, 0.0) + float(row["us"])
    return out


def measure_compile(target: str, steps: Sequence[Any], partitions: Sequence[dict[str, Any]],
                    run: Callable[..., Any], example_inputs: Sequence[Any]) -> dict[str, Any]:
    """`measure_kernels` for the driver: its steps (the compiled ones are the partitions, in
    order), the partition reports (their optimized IR) and the flat call on the example
    inputs. A failure is reported on the page, never raised: the compile already succeeded."""
    import torch
    from torch.utils import _pytree as pytree

    from ir import parse_module

    kernels = [s.fn for s in steps if not s.eager]
    args = pytree.tree_leaves(tuple(example_inputs))
    try:
        modules = [parse_module(p["optimized_ir"], verify=False) if getattr(k, "vm", None) is not None else None
                   for k, p in zip(kernels, partitions)]

        def call() -> Any:
            with torch.no_grad():
                return run(*args)

        return measure_kernels(target, kernels, modules, call)
    except Exception as err:  # noqa: BLE001 - measuring for the page must not fail a compile
        why = f"not measured: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return {"call_ms": None, "partitions": [{"not_measured": why} for _ in kernels]}
