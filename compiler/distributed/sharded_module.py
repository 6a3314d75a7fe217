"""`compile_sharded`: plan and run a model inside a process group the user already started.

For code launched by torchrun (or any `init_process_group`): every rank calls
`compile_sharded(model, example_inputs, mesh=(2, 2))`, gets the same plan (planning is
deterministic), and calls the result like the model; each call runs this rank's shard with
the plan's collectives and returns the whole (replicated) outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from compiler.distributed.plan import PlanError, plan_model
from compiler.distributed.shard_runtime import Collectives, Mesh, run_local


class ShardedModule:
    def __init__(self, planned: Any, mesh: tuple[int, ...]) -> None:
        from ir import parse_module
        from ir.program import entry_function

        self.planned = planned
        self.summary = planned.summary
        self.fn = entry_function(parse_module(planned.module_text))
        self.mesh = Mesh(mesh, dist.get_rank())
        self.last_collectives: dict[str, int] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        coll = Collectives(self.mesh)
        ordered = [inputs[i] for i in self.planned.input_order]
        with torch.no_grad():
            outs = run_local(self.fn, ordered, self.planned.params, coll)
        self.last_collectives = dict(coll.calls)
        return outs[0] if len(outs) == 1 else outs


def compile_sharded(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor],
                    mesh: tuple[int, ...] | None = None, pipeline: str | None = None) -> ShardedModule:
    if not dist.is_initialized():
        raise PlanError("compile_sharded runs inside a process group; call torch.distributed.init_process_group first")
    world = dist.get_world_size()
    mesh = tuple(mesh or (world,))
    size = 1
    for m in mesh:
        size *= m
    if size != world:
        raise PlanError(f"mesh {'x'.join(map(str, mesh))} has {size} devices but the process group has {world}")
    pipeline = pipeline or f"shard{{mesh={'x'.join(map(str, mesh))}}}"
    planned = plan_model(model, example_inputs, pipeline, mesh)
    if planned.kind != "shard":
        raise PlanError("compile_sharded runs shard plans; run pipeline plans with kiln run")
    return ShardedModule(planned, mesh)
