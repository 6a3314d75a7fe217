"""Build a Relax IRModule for the host CPU with Kiln's pipeline, cache it, and run it.

``tvm.compile``'s default pipeline legalizes and fuses but leaves every PrimFunc
unscheduled; here Kiln owns the Relax pipeline (``relax_pipeline``): its own fast-math
legalizations, fusion (Relax's ``FuseOps``/``FuseTIR`` as a stop-gap until Kiln's fusion
decisions arrive from the IR), its CPU schedules on every PrimFunc, then Relax's standard
lowering to the VM. Contractions arrive already as ``call_dps_packed`` calls to the
``kiln.*`` library (``library.py``) and pass through untouched.

The runner keeps the call path thin: the VM function is fetched once, torch tensors go in
and come out zero-copy through DLPack (tvm-ffi converts them in C), no Python work per call.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.target import Target

from .legalize import fast_math_legalizations
from .library import register_library
from .schedule import ScheduleOptions, schedule_module
from .target import cpu_target


@dataclass(frozen=True)
class RelaxBuildOptions:
    """What ``build`` does; ``target=None`` means the host CPU with fast math."""

    target: Target | None = None
    fast_math: bool = True
    fuse: bool = True
    schedule: bool = True
    schedule_options: ScheduleOptions = field(default_factory=ScheduleOptions)

    def resolved_target(self) -> Target:
        return self.target if self.target is not None else cpu_target(fast_math=self.fast_math)


def relax_pipeline(options: RelaxBuildOptions | None = None) -> tvm.transform.Pass:
    """The Relax pipeline Kiln runs before VM codegen, as one module pass."""
    options = options or RelaxBuildOptions()
    target = options.resolved_target()
    legalize_map = fast_math_legalizations() if options.fast_math else None

    @tvm.transform.module_pass(opt_level=0, name="KilnScheduleCPU")
    def schedule_pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return schedule_module(mod, target, options.schedule_options)

    passes = [
        *cpu_pipeline.library_dispatch_passes(target),
        relax.transform.LegalizeOps(customize_legalize_map=legalize_map),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
    ]
    if options.fuse:
        passes += [relax.transform.FuseOps(), relax.transform.FuseTIR()]
    if options.schedule:
        passes.append(schedule_pass)
    passes += cpu_pipeline.dataflow_lower_passes(target) + cpu_pipeline.finalize_passes(target)

    @tvm.transform.module_pass(opt_level=0, name="KilnRelaxPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def build(mod: tvm.IRModule, options: RelaxBuildOptions | None = None) -> tvm.runtime.Executable:
    """Compile ``mod`` (Relax functions calling ops and ``kiln.*`` library functions)."""
    options = options or RelaxBuildOptions()
    return tvm.compile(mod, options.resolved_target(), relax_pipeline=relax_pipeline(options))


def save(executable: tvm.runtime.Executable, path: str | os.PathLike) -> Path:
    """Export ``executable`` as a shared library at ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        executable.export_library(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(path: str | os.PathLike) -> tvm.runtime.Module:
    """Load a library written by ``save``; ``Runner`` accepts the result."""
    return tvm.runtime.load_module(str(path))


def build_cached(
    mod: tvm.IRModule, path: str | os.PathLike, options: RelaxBuildOptions | None = None
) -> tvm.runtime.Module | tvm.runtime.Executable:
    """Load ``path`` if it exists, else build ``mod`` and save it there.

    The caller owns the key: ``path`` must change whenever the module, the options, the
    target or the toolchain versions do.
    """
    if Path(path).exists():
        return load(path)
    executable = build(mod, options)
    save(executable, path)
    return executable


class Runner:
    """Calls one function of a built module on torch tensors.

    Inputs may be any CPU tensors the VM accepts (torch tensors are exchanged through
    DLPack without a copy). When the inputs are torch tensors, tvm-ffi returns torch
    tensors. ``kiln.*`` library functions are registered before the VM is created, as the
    VM resolves extern names when it loads.
    """

    def __init__(
        self,
        executable: tvm.runtime.Module | tvm.runtime.Executable,
        func_name: str = "main",
        device: tvm.runtime.Device | None = None,
    ) -> None:
        register_library()
        self.vm = relax.VirtualMachine(executable, device or tvm.cpu())
        self.func = self.vm[func_name]

    def __call__(self, *args: torch.Tensor) -> object:
        return self.func(*args)
