"""The TVM backend: lower kiln IR to Relax, fuse, schedule for this CPU, build, run on the VM.

Build artifacts (`.so`) are cached on disk under a key of everything that can change
the code: the optimized IR text, the target, and the versions of Kiln, TVM and torch.
Weights are not part of the artifact (they are bound at load time), so the key holds
no weight values.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import ClassVar

import torch

from backends.base import BuildOptions, Capabilities
from backends.source_digest import source_digest
from ir.dialect import OPS_BY_NAME
from ir.program import Program
from ir.text import print_module

# Bumped whenever the lowering or schedules change what code a given IR produces.
# 2: single-op TIR groups are wrapped as `kiln_group_<id>`; tuned schedule options.
# 3: fast-math legalizations (softmax, gelu, ...) in the fused path too.
# 4: packed quantized weights: dequantize fused into linear/matmul TIR kernels (quant_lower.py).
# 5: loop-structure knobs in ScheduleOptions (vector lanes, tile, loop order, parallel depth, unroll).
# 6: linears on parameter weights run a TIR kernel over weights packed at load time (dense_packed.py).
# 7: vector width from the CPU's ISA features (AVX2 hosts had been given 16 lanes).
# 8: per-program thread plan (thread_policy.py): serial programs build serial elementwise kernels.
CODEGEN_VERSION = "8"


@dataclass
class TVMKernel:
    """A loaded Relax VM function with its parameters bound; flat torch tensors in and out."""

    vm_main: object
    params: list[object]
    num_kernels: int
    cache_hit: bool
    artifacts: dict[str, Path] = field(default_factory=dict)
    reference_ops: list[str] = field(default_factory=list)
    tuned: dict[str, dict] = field(default_factory=dict)  # kernel name -> non-default config
    tuning_hits: int = 0  # TIR kernels that found a tuned record (default or not)
    quant_paths: dict[str, str] = field(default_factory=dict)  # quantized weight -> path
    dense_paths: dict[str, str] = field(default_factory=dict)  # linear/conv weight -> its kernel path
    # Threads in use during a call, {"tvm": n, "torch": m} (`thread_policy.py`).
    pool_threads: dict[str, int] = field(default_factory=dict)
    # Outputs that would be one storage on every call (constants, inputs passed through):
    # cloned per call, as eager returns fresh tensors (`backends/fresh_outputs.py`).
    shared_outputs: tuple[int, ...] = ()
    # How the executable's trailing parameters come from the model's (`Lowered.param_names`
    # and `.derived`), and where the artifact lies: what `compiler/compile_cache.py` stores
    # so that a later compile of the same captured IR binds that model's weights (reload.py).
    binding: object = None
    artifact_path: Path | None = None
    # The VM itself: `backends/tvm/profile.py` instruments its calls for the HTML report's
    # measured per-kernel times (only when a report is asked for; calls never pay for it).
    vm: object = None
    # `thread_policy.py`: torch's threads while this program runs (None: left as they are;
    # 1 when the kernels own the cores, so library calls never wake torch's worker).
    torch_threads_in_call: int | None = None
    thread_reason: str = ""
    # The VM runs no torch op that autograd records: callers need no `torch.no_grad()`
    # around it (the context manager is ~1.5 us, a sixth of a tiny graph's call).
    autograd_free: ClassVar[bool] = True

    def __post_init__(self) -> None:
        # The parameters as TVM tensors, made once: passing a torch tensor costs a DLPack
        # exchange on every call (0.14 us each; MobileNetV2 binds 313 parameters, 44 us a
        # call before any kernel ran). They share the torch tensors' memory.
        import tvm

        self._call_params = [tvm.runtime.from_dlpack(p) for p in self.params]

    @property
    def param_bytes(self) -> int:
        """Bytes of the parameters bound to the executable (packed codes stay packed)."""
        return sum(p.numel() * p.element_size() for p in self.params)

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        # With torch tensors in, tvm-ffi hands torch tensors back (DLPack in C, no copy).
        # TIR kernels index compact buffers: a strided view (an eager step's permute or
        # expand output) is rejected by the VM, so it is made compact first.
        if not all(a.is_contiguous() for a in args):
            args = tuple(a.contiguous() for a in args)
        held = self.torch_threads_in_call
        if held is None:
            outs = _as_list(self.vm_main(*args, *self._call_params))
        else:
            before = torch.get_num_threads()
            torch.set_num_threads(held)
            try:
                outs = _as_list(self.vm_main(*args, *self._call_params))
            finally:
                torch.set_num_threads(before)
        for i in self.shared_outputs:
            outs[i] = outs[i].clone()
        return outs


class TVMBackend:
    name = "tvm"

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(OPS_BY_NAME), fusible=frozenset({"injective", "reduction"}))

    def pipeline(self) -> str:
        from backends.tvm.pipeline import kiln_pipeline

        return kiln_pipeline()

    def knobs(self) -> dict[str, tuple[int, ...]]:
        """The knobs of a TIR kernel and their valid values (`knobs.py`)."""
        from backends.tvm.knobs import knob_values

        return knob_values(2)

    def build(self, program: Program, options: BuildOptions) -> TVMKernel:
        import tvm
        from tvm import relax

        from backends.fresh_outputs import shared_output_positions
        from backends.tvm import library
        from backends.tvm.arena import memory_pipeline, record_memory
        from backends.tvm.compile import build_executable
        from backends.tvm.dense_knobs import is_dense
        from backends.tvm.knobs import schedule_options
        from backends.tvm.reference import register_reference
        from backends.tvm.schedule import ScheduleOptions
        from backends.tvm.target import cpu_target, pools_for

        threads, pool = pools_for(options.num_threads)
        library.register_library()
        target = cpu_target()
        tuned, hits = tuned_configs(program, options, str(target), threads)
        ir_text = key_text(program.module)
        if tuned:
            ir_text += "\0tuned:" + json.dumps(tuned, sort_keys=True)
        # the plan, the lowering's rules and their choices: `_lower_for_threads`
        lowered, plan = _lower_for_threads(program, options, min(threads, pool.num_threads), pool, tuned)
        ir_text += "\0threads:" + plan.key()
        params = [t.detach().contiguous() for t in lowered.bind(program.params)]
        # The lowering's decisions that depend on this host (which linears run packed, each
        # quantized weight's path) and the executable's parameter signature are part of the
        # key: a rule that changes between builds must miss the cache, never load an
        # executable that expects other parameters.
        ir_text += "\0paths:" + json.dumps([lowered.dense_paths, lowered.quant_paths], sort_keys=True)
        ir_text += "\0params:" + ";".join(f"{tuple(p.shape)}{p.dtype}" for p in params)
        key = artifact_key(ir_text, str(target))
        for op in program.kiln_ops():  # re-register reference kernels a cached artifact calls
            if op.name in lowered.reference_ops:
                register_reference(op)
        path = options.cache_dir / f"{key}.so" if options.cache_dir else None
        meta = path.with_suffix(".json") if path is not None else None
        hit = path is not None and path.exists() and meta.exists()
        if hit:
            executable = tvm.runtime.load_module(str(path))
            num_kernels = int(json.loads(meta.read_text())["num_kernels"])
            memory = json.loads(meta.read_text()).get("memory", {})
        else:
            # The plan's threads bound a tuned kernel's (a serial plan builds serial kernels);
            # a packed linear's tiles are the lowering's (dense_knobs.py).
            schedules = {name: schedule_options({**c, "num_threads": min(c.get("num_threads", 1), plan.kernel_threads)},
                                                plan.kernel_threads)
                         for name, c in tuned.items() if not is_dense(c)}
            # map-memory's plan: intermediates at their offsets in one arena (arena.py)
            arena, memory = memory_pipeline(program.module, lowered.arena_offsets, target)
            executable, num_kernels = build_executable(
                lowered.module, target, lowered.grouped, schedules, arena,
                ScheduleOptions(num_threads=plan.kernel_threads),
            )
            memory = memory() if memory else {}
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.so")
                executable.export_library(str(tmp))
                meta.write_text(json.dumps({"num_kernels": num_kernels, "target": str(target), "memory": memory}))
                os.replace(tmp, path)  # atomic, and last: a reader never sees half an entry
        artifacts: dict[str, Path] = {}
        if options.out_dir is not None:
            options.out_dir.mkdir(parents=True, exist_ok=True)
            artifacts["library"] = options.out_dir / "kernel.so"
            executable.export_library(str(artifacts["library"]))
            artifacts["relax"] = options.out_dir / "relax.py"
            artifacts["relax"].write_text(lowered.module.script())
        record_memory(program.module, memory)
        vm = relax.VirtualMachine(executable, tvm.cpu())
        return TVMKernel(
            vm["main"], params, num_kernels, hit, artifacts, lowered.reference_ops, tuned, hits,
            lowered.quant_paths, lowered.dense_paths,
            plan.pools(pool), shared_output_positions(program), (lowered.param_names, lowered.derived),
            path, vm, plan.torch_threads_in_call, plan.reason,
        )


def _lower_for_threads(program: Program, options: BuildOptions, threads: int, pool, tuned: dict[str, dict]):
    """Lower for `threads`, then ask the rule (`thread_policy.py`) which pool owns the cores;
    lower again for one thread when torch's pool should. An explicit `num_threads` is taken
    as is: kernels for that many threads, torch left alone.

    Kiln's own contraction kernels get the threads the plan gives (a serial plan: no
    parallel loop, and their rules are stricter). Which linears run the packed kernel
    (`dense_packed.py`, extra["dense"]: auto, packed or library), which convolutions the
    direct one (`conv_direct.py`, extra["conv"]: auto, direct or library) and which
    attention ops the TIR one (`attention_tir.py`, extra["attention"]: auto, tir or
    library) is in `Lowered.dense_paths`, which the caller puts in the artifact key.
    """
    from backends.tvm.attention_tir import AttentionOptions
    from backends.tvm.conv_direct import ConvOptions
    from backends.tvm.dense_knobs import dense_kernels
    from backends.tvm.dense_packed import DenseOptions
    from backends.tvm.lower import lower_program
    from backends.tvm.thread_policy import (
        ThreadPlan,
        WorkSplit,
        check_policy,
        plan_threads,
        work_split,
    )

    def lower(kernel_threads: int):
        dense = DenseOptions(policy=options.extra.get("dense", "auto"), threads=kernel_threads,
                             library_threads=pool.torch_threads or pool.num_threads, tuned=dense_tiles)
        conv = ConvOptions(policy=options.extra.get("conv", "auto"), threads=kernel_threads)
        attention = AttentionOptions(policy=options.extra.get("attention", "auto"), threads=kernel_threads)
        return lower_program(program, dense, conv, attention, threads=kernel_threads)

    dense_tiles = tuple((site.group, space.tiles(tuned[site.name]))
                        for site, space in (dense_kernels(program) if tuned else ()) if site.name in tuned)
    policy = check_policy(options.extra.get("threads", "auto"))
    if options.num_threads is not None or threads <= 1:
        return lower(threads), ThreadPlan(threads, None, f"{threads} thread(s), as asked")
    compute = [op for op in program.kiln_ops() if op.name not in ("kiln.param", "kiln.constant")]
    total = sum(op.flops() for op in compute)
    # Serial whatever the library calls are (asked, or ops too small): one lowering.
    early = plan_threads(WorkSplit(0, total, 0, len(compute)), threads, policy=policy)
    if early.kernel_threads == 1:
        return lower(1), early
    lowered = lower(threads)
    plan = plan_threads(work_split(lowered.module, total, len(compute)), threads, policy=policy)
    if plan.kernel_threads != threads:
        lowered = lower(plan.kernel_threads)
    return lowered, plan


def tuned_configs(
    program: Program, options: BuildOptions, target: str, threads: int
) -> tuple[dict[str, dict], int]:
    """Tuned knobs by kernel name, from `options.kernel_configs` (no measurement here),
    and how many TIR kernels found a record.

    Each TIR kernel is looked up under its functional key. Only configs that differ from
    the defaults are returned, so a model whose records all say "the defaults are best"
    builds (and caches) the same artifact as an untuned one. A record this build cannot
    use (a knob table that changed, more threads than this build has) is ignored with a
    warning, never fatal.
    """
    if options.kernel_configs is None:
        return {}, 0
    from backends.tvm.dense_knobs import dense_kernels
    from backends.tvm.knobs import KnobError, canonical, default_config, kernel_key_of, tir_kernels

    # scheduled kernels against the knob table, packed linears against their tile space
    sites = [(site, lambda c: canonical(c, threads), default_config(threads)) for site in tir_kernels(program)]
    sites += [(site, space.canonical, space.default) for site, space in dense_kernels(program)]
    out: dict[str, dict] = {}
    hits = 0
    for site, canon, default in sites:
        config = options.kernel_configs.config_for(kernel_key_of(site, program, target), target)
        if config is None:
            continue
        hits += 1
        try:
            config = canon(config)
        except KnobError as err:
            warnings.warn(f"kiln: ignoring the tuned config of {site.name}: {err}", RuntimeWarning, stacklevel=2)
            continue
        if config != default:
            out[site.name] = config
    return out, hits


def key_text(module) -> str:
    """The IR as it determines code: ops and their decisions, without the module-level
    pass summaries (`kiln.fusion` holds solver wall times, which differ every compile)."""
    stripped = module.clone()
    for name in [k for k in stripped.attributes if k.startswith("kiln.")]:
        del stripped.attributes[name]
    return print_module(stripped)


def _as_list(outs: object) -> list[torch.Tensor]:
    """The VM's result tuple as a list. tvm-ffi's `Array` iterates through a generator over
    a bounds-checked `__getitem__` (2.3 us for one element here); its own getter takes 0.5 us,
    a fifth of a tiny graph's whole call. Falls back to `list` if tvm-ffi moves it."""
    if not _ARRAY_API:
        _ARRAY_API.append(_array_api())
    api = _ARRAY_API[0]
    if api is None or not isinstance(outs, api[0]):
        return list(outs)  # type: ignore[call-overload]
    get = api[1]
    return [get(outs, i) for i in range(api[2](outs))]


_ARRAY_API: list = []  # [(Array, ArrayGetItem, ArraySize) or None], filled on the first call


def _array_api() -> tuple | None:
    try:
        from tvm_ffi.container import Array, _ffi_api

        return Array, _ffi_api.ArrayGetItem, _ffi_api.ArraySize
    except (ImportError, AttributeError):
        return None


def artifact_key(ir_text: str, target: str) -> str:
    """The optimized IR and everything its lowering depends on, the lowering's own source
    included (`backends/source_digest.py`: a changed kernel is a miss, no bump to forget)."""
    parts = [ir_text, target, CODEGEN_VERSION, source_digest(("backends",)), version("kiln"),
             version("apache-tvm"), torch.__version__]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


