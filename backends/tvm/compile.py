"""From a lowered Relax module to a VM executable: legalize, fuse, schedule, compile.

Until Kiln's own fusion pass decides groups (issue: fusion by ILP), Relax's FuseOps
groups injective and reduction ops; every fused PrimFunc is then scheduled by
`schedule.py` before codegen, since TVM's default pipeline leaves CPU loops serial and
scalar.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.target import Target

from backends.tvm.schedule import SCHEDULE_ATTR, schedule_module


def fuse(module: tvm.IRModule, target: Target) -> tvm.IRModule:
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])
    with target:
        return seq(module)


def build_executable(module: tvm.IRModule, target: Target):
    """Compile with Kiln's schedules; a schedule that breaks codegen is dropped, not fatal.

    When the whole module fails to build, each scheduled PrimFunc is built on its own and
    the ones that fail fall back to their unscheduled (legalized) form, so a schedule bug
    costs speed, never a build.
    """
    fused = fuse(module, target)
    unscheduled = dict(fused.functions_items())  # schedule_module updates the module in place
    scheduled = schedule_module(fused, target)
    try:
        return tvm.compile(scheduled, target=target)
    except Exception:  # noqa: BLE001 - find and drop the schedules that broke codegen
        pass
    for gvar, func in list(scheduled.functions_items()):
        if not isinstance(func, tirx.PrimFunc) or func.same_as(unscheduled[gvar]):
            continue
        try:
            tvm.tirx.build(func.with_attr("global_symbol", gvar.name_hint), target=target)
        except Exception:  # noqa: BLE001
            scheduled[gvar] = unscheduled[gvar].with_attr(SCHEDULE_ATTR, "none")
    return tvm.compile(scheduled, target=target)


def fused_kernel_count(module: tvm.IRModule) -> int:
    """Calls in `main` that launch work: library (packed) calls and TIR calls after fusion."""
    text = module["main"].script() if "main" in [g.name_hint for g in module.get_global_vars()] else ""
    tir_groups = _count_tir_groups(module)
    return text.count("R.call_dps_packed(") + tir_groups


def _count_tir_groups(module: tvm.IRModule) -> int:
    """Fused groups FuseOps would form: legalize+fuse a copy and count call_tir sites."""
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])
    fused = seq(module)
    return fused["main"].script().count("R.call_tir(")
