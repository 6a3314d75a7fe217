"""Plan once, in the parent: capture the model, run the pipeline, count the collectives it implies.

`plan_model` returns the planned IR (as text, so every rank parses the same module), the
parameters, eager outputs for `--check`, the pass's summary, and the collectives the plan
predicts per rank (computed from the placements on the IR with the same
`reshard_steps` the runtime executes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from passes.shard.placement import parse, replicated, reshard_steps


class PlanError(ValueError):
    """The model or pipeline cannot be planned for this mesh; one line."""


@dataclass
class PlannedModel:
    module_text: str
    params: dict[str, torch.Tensor]
    input_order: list[int]  # IR argument i is the model's input input_order[i]
    eager_outputs: list[torch.Tensor]
    summary: dict[str, Any]
    predicted: dict[str, int]
    kind: str = "shard"  # or "pipeline"

    def payload(self) -> tuple:
        return (self.module_text, self.params, self.input_order, self.predicted, self.summary)


@dataclass
class Captured:
    """A model captured once; plans for several pipelines start from its text."""

    module_text: str
    params: dict[str, torch.Tensor]
    input_order: list[int]
    eager_outputs: list[torch.Tensor]


def capture(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> Captured:
    from compiler.capture import CaptureError, convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from compiler.capture.partition import IGNORED

    model = model.eval()
    with torch.no_grad():
        eager = model(*inputs)
    try:
        graph = from_model(model, inputs)
    except CaptureError as err:
        raise PlanError(str(err)) from None
    plan = plan_partitions(graph)
    parts = plan.partitions()
    if plan.failures or len(parts) != 1:
        raise PlanError(f"kiln run shards whole-graph models only; this one splits into {len(parts)} "
                        f"partitions ({len(plan.failures)} unsupported ops)")
    conv = convert_nodes(parts[0], plan.consts, users_outside(parts[0], IGNORED))
    user = [n.name for n in graph.placeholders()][-len(inputs):]
    order = [user.index(getattr(n, "name", str(n))) for n in conv.inputs]
    outs = list(eager) if isinstance(eager, (tuple, list)) else [eager]
    return Captured(str(conv.program.module), dict(conv.program.params), order, outs)


def plan_model(model: torch.nn.Module | Captured, inputs: Sequence[torch.Tensor], pipeline: str,
               mesh: tuple[int, ...]) -> PlannedModel:
    """Capture (unless given a `Captured`), check the pipeline against the mesh, run it."""
    from compiler.driver import module_decisions
    from ir import parse_module
    from passes import PipelineError, parse_pipeline, run_pipeline
    from passes.pipeline_stages import PipelinePass, PipelineStageError
    from passes.shard import ShardError, ShardPass, parse_mesh_option

    try:
        passes = parse_pipeline(pipeline)
        shards = [p for p in passes if isinstance(p, ShardPass)]
        planned = parse_mesh_option(shards[-1].mesh) if shards else None
    except (PipelineError, ShardError) as err:
        raise PlanError(str(err)) from None
    stages = [p for p in passes if isinstance(p, PipelinePass)]
    if stages and shards:  # each stage's submesh runs the shard plan: the run's mesh is stages x submesh
        p, want = stages[-1], (stages[-1].stages, *planned)
        if tuple(mesh) != want or (p.mesh or p.stages) != _size(want):
            raise PlanError(f"pipeline{{stages={p.stages} mesh={_size(want)}}} with shard{{mesh="
                            f"{'x'.join(map(str, planned))}}} runs on --mesh {'x'.join(map(str, want))} "
                            f"(stages x submesh), got pipeline mesh {p.mesh or p.stages} and run mesh "
                            f"{'x'.join(map(str, mesh))}")
        planned = tuple(mesh)
    elif stages:  # one device per stage: a one-device shard plan gives every value its placement
        p = stages[-1]
        if len(mesh) != 1 or p.stages != mesh[0] or (p.mesh or p.stages) != p.stages:
            raise PlanError(f"pipeline{{stages={p.stages}}} alone runs one device per stage: it needs "
                            f"--nproc {p.stages}, got mesh {'x'.join(map(str, mesh))} (add shard{{mesh=...}} "
                            f"for a sharded stage)")
        passes = [*passes, ShardPass(mesh="1", solver="replicate")]
        planned = tuple(mesh)
    if planned is None:
        raise PlanError(f"pipeline {pipeline!r} has no shard or pipeline pass; kiln run needs one (e.g. shard{{mesh=2}})")
    if planned != tuple(mesh):
        raise PlanError(f"the pipeline plans for mesh {'x'.join(map(str, planned))} but the run has "
                        f"{'x'.join(map(str, mesh))} ({_size(mesh)} ranks)")
    captured = model if isinstance(model, Captured) else capture(model, inputs)
    module = parse_module(captured.module_text)
    try:
        run_pipeline(module, passes)
    except (ShardError, PipelineError, PipelineStageError) as err:
        raise PlanError(str(err)) from None
    decisions = module_decisions(module)
    if stages:
        if shards:
            _check_stage_cuts(module, captured.params, stages[-1].stages, stages[-1].microbatches, planned[1:])
        summary = {**decisions.get("pipeline", {}), "shard": decisions.get("shard", {})}
        traffic = [plan_traffic(module, s, stages[-1].microbatches) for s in range(stages[-1].stages)]
        per_stage = {s: t[0] for s, t in enumerate(traffic)}
        summary["stage_comm_mb"] = [t[1] / 1e6 for t in traffic]  # one microbatch, one rank
        return PlannedModel(str(module), captured.params, captured.input_order, captured.eager_outputs,
                            summary, per_stage, kind="pipeline")  # type: ignore[arg-type]
    return PlannedModel(str(module), captured.params, captured.input_order, captured.eager_outputs,
                        decisions.get("shard", {}), predicted_collectives(module))


def _check_stage_cuts(module: ModuleOp, params: dict[str, torch.Tensor], stages: int, m: int,
                      sub: tuple[int, ...]) -> None:
    """Refuse here, not on a rank, a shard plan a stage cannot run on one microbatch."""
    from compiler.distributed.local_program import LocalProgramError, cut
    from compiler.distributed.pipeline_runtime import crossings
    from ir.program import entry_function

    fn = entry_function(module)
    for s in range(stages):
        incoming, outgoing = crossings(fn, s, stages)
        try:
            cut(fn, params, sub, (0,) * len(sub), stage=s, incoming=incoming, outgoing=outgoing, microbatches=m)
        except LocalProgramError as err:
            raise PlanError(f"stage {s}: {err}") from None


def _size(mesh: tuple[int, ...]) -> int:
    n = 1
    for m in mesh:
        n *= m
    return n


def predicted_collectives(module: ModuleOp, stage: int | None = None) -> dict[str, int]:
    """Collectives one rank issues under the plan on `module` (every rank issues the same);
    with `stage`, one microbatch of that pipeline stage (the last one gathers the results)."""
    return plan_traffic(module, stage)[0]


def plan_traffic(module: ModuleOp, stage: int | None = None, microbatches: int = 1) -> tuple[dict[str, int], float]:
    """(collectives by kind, bytes one rank sends) under the plan, by the cost model's formulas;
    with `stage`, for one microbatch of that stage (values carrying the batch are 1/M of it)."""
    from cost_models import comm
    from ir import dtypes
    from ir.program import entry_function
    from passes.shard.placement import local_shape, step_bytes

    fn = entry_function(module)
    mesh = tuple(int(m) for m in fn.attributes["kiln.mesh"].data.split("x"))  # type: ignore[union-attr]
    placement = dict(zip(fn.body.block.args, _split(fn.attributes["kiln.arg_placements"].data)))  # type: ignore[union-attr]
    batched = set(fn.body.block.args)
    counts: Counter[str] = Counter()
    sent = 0.0

    def nbytes(value) -> float:
        return dtypes.nbytes(value.type) / (microbatches if value in batched else 1)

    def edge(value, dst) -> None:
        nonlocal sent
        for s in reshard_steps(placement[value], dst, dtypes.shape_of(value.type), mesh, nbytes(value)):
            if s.kind != "slice":
                counts[s.kind] += 1
                sent += step_bytes(s, mesh)

    ops = list(fn.body.block.ops)
    last = max((int(o.attributes["kiln.stage"].value.data) for o in ops if "kiln.stage" in o.attributes),  # type: ignore[union-attr]
               default=0)
    for op in ops:
        if isinstance(op, func.ReturnOp):
            for v in op.operands if stage in (None, last) else ():
                edge(v, replicated(mesh))
            continue
        if stage is not None and op.name not in ("kiln.param", "kiln.constant") \
                and int(op.attributes["kiln.stage"].value.data) != stage:  # type: ignore[union-attr]
            for r in op.results:
                placement[r] = parse(op.attributes["kiln.placement"].data)  # type: ignore[union-attr]
            if any(v in batched for v in op.operands):
                batched.update(op.results)
            continue
        wants = _split(op.attributes["kiln.operand_placements"].data) if "kiln.operand_placements" in op.attributes else []
        for v, q in zip(op.operands, wants):
            edge(v, q)
        out_p = parse(op.attributes["kiln.placement"].data)  # type: ignore[union-attr]
        if any(v in batched for v in op.operands):
            batched.update(op.results)
        if "kiln.all_reduce" in op.attributes:
            local = nbytes(op.results[0]) * math.prod(local_shape(out_p, dtypes.shape_of(op.results[0].type), mesh)) \
                / max(dtypes.numel(op.results[0].type), 1)
            for a in op.attributes["kiln.all_reduce"].data.split(","):  # type: ignore[union-attr]
                counts["all_reduce"] += 1
                sent += comm.wire_bytes("all_reduce", local, mesh[int(a)])
        for r in op.results:
            placement[r] = out_p
    return dict(counts), sent


def _split(text: str) -> list[tuple[int, ...]]:
    return [parse(t) for t in text.split(";")] if text else []
