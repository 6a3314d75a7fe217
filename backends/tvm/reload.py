"""Reload a built TVM kernel for a new model's weights, without lowering or passes.

`compiler/compile_cache.py` keys a compile by the captured IR (before any pass). On a
hit it has the executable (`.so`) and the recipe that turns the model's parameters into
the executable's trailing arguments (`Lowered.param_names` plus the load-time derived
ones: packed weights, folded batch-norm scales). This file is the backend half: what
`build` does after `lower_program` and `build_executable`, replayed for the caller's
weights. The weights are always the caller's; nothing from the first model is kept.

The recipe's derived functions are closures over names and shapes (no TVM objects), so
they are stored with cloudpickle beside the executable.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from backends.base import BuildOptions
from backends.tvm.backend import CODEGEN_VERSION, TVMKernel


def dump_binding(binding: Any) -> bytes:
    import cloudpickle

    buffer = io.BytesIO()
    cloudpickle.dump(binding, buffer)
    return buffer.getvalue()


def build_context(options: BuildOptions) -> str:
    """What a build of the same IR depends on besides the IR: target (this host's CPU),
    the thread pools in force (they decide packed vs library linears), codegen version."""
    from importlib.metadata import version

    from backends.tvm.target import cpu_target, pools_for

    threads, pool = pools_for(options.num_threads)
    return "|".join([str(cpu_target()), f"{threads}:{pool.num_threads}:{pool.torch_threads}",
                     CODEGEN_VERSION, version("apache-tvm")])


def reload_kernel(entry: dict[str, Any], binding: bytes, params: dict[str, torch.Tensor],
                  options: BuildOptions, optimized_ir: str) -> TVMKernel | None:
    """The kernel of a stored build bound to `params`; None when the artifact is gone."""
    import pickle

    import tvm
    from tvm import relax

    from backends.tvm import library
    from backends.tvm.reference import register_reference
    from backends.tvm.target import pools_for

    path = Path(entry["artifact"])
    if not path.exists():
        return None
    pools_for(options.num_threads)  # sizes the pools, as a build does
    library.register_library()
    if entry["reference_ops"]:  # kernels that call back into Python: register them again
        from ir import Program, parse_module

        names = set(entry["reference_ops"])
        for op in Program(parse_module(optimized_ir, verify=False)).kiln_ops():
            if op.name in names:
                register_reference(op)
    param_names, derived = pickle.loads(binding)
    with torch.no_grad():
        bound = [params[n] for n in param_names] + [fn(params) for _, fn in derived]
    bound = [t.detach().contiguous() for t in bound]
    executable = tvm.runtime.load_module(str(path))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return TVMKernel(
        vm["main"], bound, entry["num_kernels"], True, {}, entry["reference_ops"], entry["tuned"],
        entry["tuning_hits"], entry["quant_paths"], entry["dense_paths"],
        entry["pool_threads"], tuple(entry["shared_outputs"]), (param_names, derived), path, vm,
        entry["torch_threads_in_call"], entry["thread_plan"],
    )
