"""Kiln's tuner against TVM MetaSchedule, same kernels, same number of measured trials.

For the kernels with the largest share of the tuned zoo models' time, MetaSchedule's
`tune_tir` searches the kernel's unscheduled PrimFunc (as legalized and fused by Kiln)
with `trials` measured candidates (LocalBuilder with a 120 s timeout, as 2 cores need);
its best schedule, Kiln's default schedule and Kiln's tuned one are then built into the
same one-kernel Relax program and timed interleaved, the way the tuner's worker times a
candidate (a VM call right after a library call, the fastest of 15 interleaved rounds). Used by `benchmarks/tuning_report.py`.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def compare(rows: list[dict[str, Any]], tuning_dir: Path, trials: int, n_kernels: int) -> dict[str, Any]:
    from backends.tvm.target import cpu_target
    from compiler.tuner.kernels import collect_tasks
    from examples.zoo import ZOO

    target = str(cpu_target())
    candidates = sorted(
        ((k, r["model"]) for r in rows for k in r["kernels"] if k["config"] is not None),
        key=lambda kr: -kr[0]["share_us"],
    )
    chosen, seen = [], set()
    for kernel, model in candidates:
        if kernel["ops"] not in seen:
            seen.add(kernel["ops"])
            chosen.append((kernel, model))
        if len(chosen) == n_kernels:
            break
    out = []
    for kernel, model_name in chosen:
        model, inputs = ZOO[model_name]()
        task = next(t for t in collect_tasks(model, inputs, model_name, target) if t.key == kernel["key"])
        try:
            out.append(_compare_one(task, kernel, trials))
        except Exception as err:  # noqa: BLE001 - reported, as the issue asks for an honest note
            out.append({"kernel": kernel["kernel"], "ops": kernel["ops"], "error": f"{type(err).__name__}: {err}"[:300]})
    return {"trials": trials, "kernels": out}


def _compare_one(task, kernel: dict[str, Any], trials: int) -> dict[str, Any]:
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from backends.tvm.compile import fuse
    from backends.tvm.knobs import default_config, schedule_options
    from backends.tvm.lower import lower_program
    from backends.tvm.schedule import SCHEDULE_ATTR, schedule_prim_func
    from backends.tvm.target import ThreadConfig, configure_threads, cpu_target
    from compiler.tuner.worker import _example, library_call, time_kernels

    configure_threads(ThreadConfig(num_threads=2))
    target = cpu_target(num_cores=2)
    lowered = lower_program(task.program)
    fused = fuse(lowered.module, target, lowered.grouped)
    gvar = next(g for g in fused.get_global_vars() if g.name_hint.startswith("kiln_group_"))
    func = fused[gvar]

    def program_with(prim_func):
        mod = tvm.IRModule(dict(fused.functions_items()))
        mod[gvar] = prim_func.with_attr("global_symbol", gvar.name_hint).with_attr(SCHEDULE_ATTR, "given")
        vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
        main, params = vm["main"], lowered.bind(task.program.params)
        return lambda *args: main(*args, *params)

    kiln_default = schedule_prim_func(func, target, schedule_options(default_config(2)))[0]
    kiln_tuned = schedule_prim_func(func, target, schedule_options(kernel["config"]))[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        single = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        database = ms.tune_tir(
            single, target, work, max_trials_global=trials, num_trials_per_iter=min(trials, 8),
            builder=ms.builder.LocalBuilder(timeout_sec=120),
        )
        schedule = ms.tir_integration.compile_tir(database, single, target)
        ms_s = time.perf_counter() - start
        if schedule is None:
            raise RuntimeError(f"MetaSchedule found no valid schedule in {trials} trials")
        ms_func = schedule.mod["main"]
    generator = torch.Generator().manual_seed(0)
    args = [_example(a.type, generator) for a in task.program.forward.body.block.args]
    fns = [program_with(f) for f in (func, kiln_default, kiln_tuned, ms_func)]
    latencies, _, _ = time_kernels(fns, args, 15, 0.005, library_call(2))
    # fastest round net of the library call, as the tuner measures; NaN: within its noise
    us = [math.nan if t is None else t * 1e6 for t in latencies]
    return {
        "kernel": kernel["kernel"],
        "ops": kernel["ops"],
        "unscheduled_us": us[0],
        "kiln_default_us": us[1],
        "kiln_tuned_us": us[2],
        "metaschedule_us": us[3],
        "kiln_tuned_config": kernel["config"],
        "kiln_tune_s": kernel.get("tune_s"),
        "metaschedule_tune_s": ms_s,
    }


def render(result: dict[str, Any]) -> list[str]:
    lines = [
        (f"Against TVM MetaSchedule, {result['trials']} measured trials each, same kernel, "
         "same timing (one-kernel VM program, us per call):"),
        "",
        "| kernel | ops | unscheduled | Kiln default | Kiln tuned | MetaSchedule | Kiln tune s | MetaSchedule tune s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in result["kernels"]:
        if "error" in k:
            lines.append(f"| {k['kernel']} | {k['ops'][:40]} | MetaSchedule failed: {k['error']} | | | | | |")
            continue
        lines.append(
            f"| {k['kernel']} | {k['ops'][:40]} | {k['unscheduled_us']:.1f} | {k['kiln_default_us']:.1f} "
            f"| {k['kiln_tuned_us']:.1f} | {k['metaschedule_us']:.1f} | {k['kiln_tune_s'] or 0:.0f} "
            f"| {k['metaschedule_tune_s']:.0f} |"
        )
    return lines
