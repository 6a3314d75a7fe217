"""The compile driver: capture -> partition -> passes -> backend build -> CompiledModule.

Both front doors (the `kiln` CLI and `torch.compile(backend="kiln")`) end here, so they
produce the same IR, the same decisions and the same report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree

from backends import BuildOptions, get_backend
from compiler.capture import (
    AtenGraph,
    StrictCaptureError,
    convert_nodes,
    from_dynamo,
    from_model,
    plan_partitions,
)
from compiler.capture.convert import users_outside
from compiler.capture.partition import IGNORED
from compiler.compile_cache import CompileCache
from compiler.compiled import CompiledModule
from compiler.options import CompileOptions
from compiler.report.steps import eager_step, partition_step
from compiler.runner import GraphRunner, Step
from ir import print_module
from passes import run_pipeline


def compile_model(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    target: str = "tvm",
    pipeline: str | None = None,
    mesh: str | int | Sequence[int] | None = None,
    **options: Any,
) -> CompiledModule:
    """Compile `model` for `target`; the result is called like the model.

    With `mesh` (inside a process group the caller started, e.g. under torchrun), the
    model is planned with the shard pass for that mesh (`pipeline` may name its options)
    and the result runs this rank's part: `compiler/distributed/sharded_module.py`.
    """
    if mesh is not None:
        from compiler.distributed.sharded_module import compile_sharded

        return compile_sharded(model, example_inputs, mesh, pipeline, backend=target)  # type: ignore[return-value]
    opts = CompileOptions.from_mapping({"target": target, "pipeline": pipeline, **options})
    start = time.perf_counter()
    _stage(opts, "capture")
    model = model.eval()
    graph = from_model(model, example_inputs)
    return compile_graph(graph, opts, start, name=type(model).__name__, example_inputs=example_inputs)


def compile_fx(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], opts: CompileOptions) -> CompiledModule:
    """The torch.compile path: Dynamo's graph, params lifted to inputs."""
    start = time.perf_counter()
    graph = from_dynamo(gm, example_inputs)
    compiled = compile_graph(graph, opts, start, name="dynamo_graph", flat_outputs=True,
                             example_inputs=example_inputs)
    compiled.input_positions = graph.input_positions  # the rest were bound: compiler/state_guard.py
    return compiled


def compile_graph(
    graph: AtenGraph,
    opts: CompileOptions,
    start: float,
    name: str,
    flat_outputs: bool = False,
    example_inputs: Sequence[Any] = (),
) -> CompiledModule:
    backend = get_backend(opts.target)
    capture_s = time.perf_counter() - start
    plan = plan_partitions(graph)
    if opts.strict and plan.failures:
        node, err = next(iter(plan.failures.items()))
        raise StrictCaptureError(f"unsupported op {err.op} in forward (node {err.node}): {err.reason}")
    if plan.failures and not backend.capabilities().eager_fallback:
        raise StrictCaptureError(no_fallback_message(opts.target, list(plan.failures.values())))
    pipeline = opts.pipeline if opts.pipeline is not None else backend.pipeline()
    build_opts = BuildOptions(
        cache_dir=(opts.cache_dir or default_cache_dir()) if opts.use_cache else None,
        out_dir=opts.out_dir,
        num_threads=opts.num_threads,
        extra=opts.extra,
        kernel_configs=tuned_configs(opts),
    )
    cache = CompileCache(opts, pipeline, build_opts)
    placeholders = {n.name: n for n in graph.placeholders()}
    input_nodes = [placeholders[name] for name in graph.inputs]
    steps: list[Step] = []
    step_log: list[dict[str, Any]] = []
    pass_times: dict[str, float] = {}
    partitions_report: list[dict[str, Any]] = []
    eager_by_level: dict[int, list[torch.fx.Node]] = {}
    for node in plan.eager_nodes():
        eager_by_level.setdefault(plan.levels[node], []).append(node)
    partitions = plan.partitions()
    levels = sorted({plan.levels[p[0]] for p in partitions} | set(eager_by_level))
    by_level = {plan.levels[p[0]]: p for p in partitions}
    for level in levels:
        if level in by_level:
            part = by_level[level]
            index = len(partitions_report)
            conversion = convert_nodes(part, plan.consts, users_outside(part, IGNORED))
            program = conversion.program
            ir_before = print_module(program.module)
            # compiler/compile_cache.py: keyed by the captured IR; a hit skips passes and lowering
            cached = cache.lookup(ir_before, program.params)
            if cached is not None:
                kernel, part_report = cached
                partitions_report.append(part_report)
            else:
                _stage(opts, "passes" + (f" (partition {index})" if index else ""))
                dump = _dumper(opts, index) if opts.dump_ir and opts.out_dir else None
                timings, quant = _run_passes(program, pipeline, opts, dump, conversion.inputs, input_nodes, graph, example_inputs)
                for t in timings:
                    pass_times[t.name] = pass_times.get(t.name, 0.0) + t.seconds
                ir_after = print_module(program.module)
                _write_ir(opts.out_dir, index, ir_before, ir_after)
                _stage(opts, "build" + (f" (partition {index})" if index else ""))
                build_start = time.perf_counter()
                kernel = backend.build(program, cache.build_opts)
                partitions_report.append({
                    "decisions": module_decisions(program.module),
                    "optimized_ir": ir_after,  # for the HTML report (compiler/report); not in --json
                    "num_ops": _count_ops(program),
                    "num_kernels": kernel.num_kernels,
                    "build_s": time.perf_counter() - build_start,
                    "cache_hit": kernel.cache_hit,
                    "tuned_kernels": len(getattr(kernel, "tuned", {})),
                    "tuning_hits": getattr(kernel, "tuning_hits", 0),
                    "artifacts": {k: str(v) for k, v in kernel.artifacts.items()},
                    # quantized weight -> where the backend decodes it (fused into a matmul, ...)
                    "quant_paths": dict(getattr(kernel, "quant_paths", {})),
                    # linear weight -> packed TIR kernel or library GEMM, and why (TVM)
                    "dense_paths": dict(getattr(kernel, "dense_paths", {})),
                    "pool_threads": dict(getattr(kernel, "pool_threads", {})),
                    # which pool owns the cores in this program, and why (backends/tvm/thread_policy.py)
                    "thread_plan": getattr(kernel, "thread_reason", ""),
                })
                cache.store(kernel, partitions_report[-1])
            steps.append(Step(kernel, conversion.inputs, conversion.outputs))
            step_log.append(partition_step(index))
        for node in eager_by_level.get(level, []):
            steps.append(Step(node.target, list(node.args), [node], dict(node.kwargs), eager=True))
            step_log.append(eager_step(node))
    output_node = next(n for n in graph.graph.nodes if n.op == "output")
    runner = GraphRunner(input_nodes, plan.consts, steps, output_node.args[0])
    fast = _fast_path(steps, input_nodes, output_node.args[0])
    report = {
        "model": name,
        "target": opts.target,
        "pipeline": pipeline,
        "num_ops": sum(p["num_ops"] for p in partitions_report),
        "num_kernels": sum(p["num_kernels"] for p in partitions_report),
        "num_partitions": len(partitions_report),
        "fallback_ops": plan.fallback_counts(),
        "fallback_reasons": sorted({f"{e.op}: {e.reason}" for e in plan.failures.values()}),
        # contraction FLOPs of the whole graph and of its eager fallback nodes: the share
        # Kiln's own kernels run, which op counts hide (one attention left to eager)
        **flop_shares(plan),
        "passes": [{"name": k, "seconds": round(v, 6)} for k, v in pass_times.items()],
        "capture_s": capture_s,
        "compile_s": time.perf_counter() - start,
        "cache_hit": bool(partitions_report) and all(p["cache_hit"] for p in partitions_report),
        # kernels that found a tuned record, and those built with non-default knobs
        "tuning_hits": sum(p["tuning_hits"] for p in partitions_report),
        "tuned_kernels": sum(p["tuned_kernels"] for p in partitions_report),
        "decisions": partitions_report[0]["decisions"] if len(partitions_report) == 1 else {},
        "partitions": partitions_report,
        "quant_paths": {w: path for p in partitions_report for w, path in p["quant_paths"].items()},
        "dense_paths": {w: path for p in partitions_report for w, path in p["dense_paths"].items()},
        "pool_threads": next((p["pool_threads"] for p in partitions_report if p["pool_threads"]), {}),
        "thread_plan": next((p["thread_plan"] for p in partitions_report if p["thread_plan"]), ""),
        "notes": graph.notes,
        "steps": step_log,  # partitions and eager fallback nodes in execution order
        "compile_cache": cache.summary(),  # the pre-pipeline cache (compiler/compile_cache.py)
    }
    if build_opts.kernel_configs is not None:
        build_opts.kernel_configs.close()
    run = fast or runner
    # Dynamo passes module state as arguments next to the user's; those were bound at
    # compile time, so the call keeps only the user's positions. Compare against the
    # caller's argument count, not the kept inputs': [0] of 29 arguments is not identity.
    if graph.input_positions is not None and graph.input_positions != list(range(len(example_inputs))):
        run = _select_inputs(run, graph.input_positions)
    signature = None if flat_outputs else [(tuple(t.shape), t.dtype) for t in _user_tensors(graph, example_inputs)
                                           if isinstance(t, torch.Tensor)]
    compiled = CompiledModule(run, graph.in_spec, None if flat_outputs else graph.out_spec, report, signature)

    def measure_kernels() -> dict[str, Any]:  # per-kernel times for the HTML report, on request only
        from compiler.report.measure import measure_compile

        return measure_compile(opts.target, steps, partitions_report, run, example_inputs)

    compiled.measure_kernels = measure_kernels
    if opts.report is not None:
        from compiler.report import write_report

        report["measured"] = measure_kernels()
        write_report(report, opts.report)
    return compiled


def _stage(opts: CompileOptions, name: str) -> None:
    if opts.on_stage is not None:
        opts.on_stage(name)


def no_fallback_message(target: str, failures: list[Any]) -> str:
    """One line: the first op the target cannot run, and that it has no eager fallback."""
    err = failures[0]
    others = sorted({e.op for e in failures[1:]} - {err.op})
    more = f" (also unsupported: {', '.join(others)})" if others else ""
    return (f"unsupported op {err.op} in forward (node {err.node}): {err.reason}{more}; target "
            f"'{target}' cannot fall back to eager PyTorch (the design runs whole on the device): "
            "remove the op or compile for tvm or triton")


def flop_shares(plan) -> dict[str, Any]:
    from compiler.capture.flops import node_flops

    total = node_flops(plan.compute)
    eager = plan.eager_nodes()
    fallback = node_flops(eager) if plan.failures else 0
    share = 1.0 - fallback / total if total else (1.0 if not plan.failures else None)
    # torch counts FLOPs of aten contractions only: an op from another library (HF's
    # grouped expert matmul) would count as free, so the share is unknown, not 100%
    foreign = sorted({str(n.target) for n in eager if not str(n.target).startswith(("aten.", "<built-in"))})
    if foreign:
        share = None
    return {"flops_total": total, "flops_fallback": fallback, "kiln_flop_share": share,
            "flops_uncounted_ops": foreign}


def tuned_configs(opts: CompileOptions):
    """Where the build reads tuned kernel configs (`kiln tune`'s winners); never measures."""
    if not opts.use_tuned or opts.target != "tvm":
        return None
    from compiler.tuner.configs import CacheConfigs

    return CacheConfigs(opts.tuning_cache)


def _select_inputs(run, positions: list[int]):
    """Drop the arguments that were bound at compile time (Dynamo's lifted parameters)."""

    def call(*args: Any) -> list[Any]:
        return run(*[args[i] for i in positions])

    call.autograd_free = getattr(run, "autograd_free", False)  # type: ignore[attr-defined]
    return call


def _fast_path(steps: list[Step], input_nodes: list[torch.fx.Node], output_args: Any):
    """The kernel itself when one compiled step maps user inputs straight to the outputs."""
    if len(steps) != 1 or steps[0].eager:
        return None
    step = steps[0]
    flat, _ = pytree.tree_flatten(output_args)
    if step.inputs == input_nodes and list(step.outputs) == flat:
        return step.fn
    return None


def _run_passes(program, pipeline, opts, dump, part_inputs, input_nodes, graph, example_inputs):
    """The pipeline; `quantize` needs the weights and example inputs, so it goes through
    `run_pipeline_quantized` (only when the partition is fed by the user's inputs)."""
    if "quantize" not in {p.strip().split("{")[0] for p in pipeline.split(",")}:
        return run_pipeline(program.module, pipeline, verify=opts.verify_each_pass, dump_ir=dump), None
    from compiler.calibration import run_pipeline_quantized
    from passes import PipelineError

    user = dict(zip(input_nodes, _user_tensors(graph, example_inputs)))
    if not all(n in user for n in part_inputs):
        raise PipelineError("quantize needs a partition fed by the model's inputs; this graph has eager ops "
                            "before it (see fallback_ops)")
    inputs = [user[n] for n in part_inputs]
    return run_pipeline_quantized(program, pipeline, inputs, verify=opts.verify_each_pass, dump_ir=dump)


def _user_tensors(graph: AtenGraph, example_inputs: Sequence[Any]) -> list[Any]:
    flat = pytree.tree_leaves(tuple(example_inputs))
    if graph.input_positions is not None:
        flat = [flat[i] for i in graph.input_positions]
    return flat


def module_decisions(module) -> dict[str, Any]:
    """The decision summaries passes left on the module (`kiln.fusion`, ...), as plain values."""
    from xdsl.dialects.builtin import DictionaryAttr

    from ir.attrs import from_attr

    out: dict[str, Any] = {}
    for key, attr in module.attributes.items():
        if key.startswith("kiln.") and isinstance(attr, DictionaryAttr):
            out[key.removeprefix("kiln.")] = {k: from_attr(v) for k, v in attr.data.items()}
    return out


def _count_ops(program) -> int:
    return sum(1 for op in program.kiln_ops() if op.name not in ("kiln.param", "kiln.constant"))


def _write_ir(out_dir: Path | None, index: int, before: str, after: str) -> None:
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if index == 0 else f".{index}"
    (out_dir / f"captured{suffix}.mlir").write_text(before)
    (out_dir / f"optimized{suffix}.mlir").write_text(after)


def _dumper(opts: CompileOptions, index: int):
    folder = opts.out_dir / "passes"  # type: ignore[operator]
    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1000))

    def dump(pass_name: str, text: str) -> None:
        (folder / f"{index}.{next(counter):02d}.{pass_name}.mlir").write_text(text)

    return dump


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kiln")) / "artifacts"
