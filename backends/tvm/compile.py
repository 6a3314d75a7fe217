"""From a lowered Relax module to a VM executable: legalize, fuse, schedule, compile.

With Kiln's fusion decisions, FuseTIR merges exactly the `fuse` pass's groups; without
them Relax's FuseOps groups injective and reduction ops (the TVM baseline). Every fused
PrimFunc is then scheduled by `schedule.py` before codegen, since TVM's default pipeline
leaves CPU loops serial and scalar.
"""

from __future__ import annotations

from collections.abc import Mapping

import tvm
from tvm import relax, tirx
from tvm.target import Target

from backends.tvm.legalize import fast_math_legalizations
from backends.tvm.schedule import (
    SCHEDULE_ATTR,
    ScheduleOptions,
    schedule_module,
    schedule_prim_func,
)


def has_kiln_groups(module: tvm.IRModule) -> bool:
    return any(g.name_hint.startswith("kiln_group_") for g in module.get_global_vars())


def fuse(module: tvm.IRModule, target: Target, kiln_groups: bool | None = None) -> tvm.IRModule:
    """Legalize and merge each fused group into one PrimFunc.

    With Kiln's groups (the `fuse` pass ran) FuseTIR merges exactly those; without them,
    Relax's FuseOps decides (TVM's default behaviour, kept as a baseline to compare with).
    """
    kiln_groups = has_kiln_groups(module) if kiln_groups is None else kiln_groups
    # Kiln's legalizations for softmax, gelu and friends: TVM's defaults are 5-100x slower
    legalize = relax.transform.LegalizeOps(customize_legalize_map=fast_math_legalizations())
    passes = [legalize, relax.transform.AnnotateTIROpPattern()]
    if not kiln_groups:
        passes.append(relax.transform.FuseOps())
    passes += [relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()]
    seq = tvm.transform.Sequential(passes)
    with target:
        return seq(module)


def build_executable(
    module: tvm.IRModule,
    target: Target,
    kiln_groups: bool | None = None,
    schedules: Mapping[str, ScheduleOptions] | None = None,
    arena: tvm.transform.Pass | None = None,
    default: ScheduleOptions | None = None,
) -> tuple[object, int]:
    """Compile with Kiln's schedules; a schedule that breaks codegen is dropped, not fatal.

    `schedules` gives tuned options by PrimFunc name (`kiln_group_<id>`); the others get
    the default options. When the whole module fails to build, each scheduled PrimFunc is
    built on its own and the ones that fail fall back to their unscheduled (legalized)
    form, so a schedule bug costs speed, never a build. `arena` (`arena.arena_pipeline`)
    replaces TVM's default Relax pipeline to put intermediates in `map-memory`'s arena.
    `default`: the options of every untuned kernel (their thread count: `thread_policy.py`).
    """
    relax_pipeline = {"relax_pipeline": arena} if arena is not None else {}
    fused = fuse(module, target, kiln_groups)
    kernels = kernel_count(fused)
    unscheduled = dict(fused.functions_items())  # schedule_module updates the module in place
    for gvar, func in unscheduled.items():
        options = (schedules or {}).get(gvar.name_hint)
        if options is not None and isinstance(func, tirx.PrimFunc):
            fused[gvar] = schedule_prim_func(func, target, options)[0]
    scheduled = schedule_module(fused, target, default)
    try:
        return tvm.compile(scheduled, target=target, **relax_pipeline), kernels
    except Exception:  # noqa: BLE001 - find and drop the schedules that broke codegen
        pass
    for gvar, func in list(scheduled.functions_items()):
        if not isinstance(func, tirx.PrimFunc) or func.same_as(unscheduled[gvar]):
            continue
        try:
            tvm.tirx.build(func.with_attr("global_symbol", gvar.name_hint), target=target)
        except Exception:  # noqa: BLE001
            scheduled[gvar] = unscheduled[gvar].with_attr(SCHEDULE_ATTR, "none")
    return tvm.compile(scheduled, target=target, **relax_pipeline), kernels


def kernel_count(fused: tvm.IRModule) -> int:
    """Kernels one call of `main` launches: TIR calls plus library (packed) calls."""
    text = fused["main"].script()
    return text.count("R.call_tir(") + text.count("R.call_dps_packed(")
