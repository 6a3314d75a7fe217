"""`compile_sharded`: plan and run a model inside a process group the user already started.

For code launched by torchrun (or any `init_process_group`): every rank calls
`compile_model(model, example_inputs, mesh=(2, 2))` (which lands here) or
`compile_sharded(...)`, gets the same plan (planning is deterministic), builds its own
local programs with the target backend (`local_program.py`), and calls the result like
the model; each call runs this rank's shard with the plan's collectives and returns the
whole (replicated) outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from compiler.distributed.plan import PlanError, plan_model
from compiler.distributed.shard_runtime import Collectives, Mesh, prepare, run_cut


class ShardedModule:
    """This rank's local programs (built by `backend`) and the plan's collectives between them."""

    def __init__(self, planned: Any, mesh: tuple[int, ...], backend: str = "tvm") -> None:
        self.planned = planned
        self.summary = planned.summary
        self.mesh = Mesh(mesh, dist.get_rank())
        self.plan, self.build = prepare(planned.module_text, planned.params, self.mesh, backend)
        self.report = {"shard": planned.summary, "predicted_collectives": planned.predicted, **self.build}
        self.last_collectives: dict[str, int] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        coll = Collectives(self.mesh)
        ordered = [inputs[i] for i in self.planned.input_order]
        with torch.no_grad():
            outs = run_cut(self.plan, ordered, coll)
        self.last_collectives = dict(coll.calls)
        return outs[0] if len(outs) == 1 else outs


def parse_mesh(mesh: str | int | Sequence[int]) -> tuple[int, ...]:
    """`"2x2"`, `4` or `(2, 2)` -> a mesh shape; a one-line PlanError otherwise."""
    try:
        shape = tuple(int(p) for p in mesh.lower().split("x")) if isinstance(mesh, str) else \
            (int(mesh),) if isinstance(mesh, int) else tuple(int(m) for m in mesh)
    except (ValueError, TypeError):
        raise PlanError(f"mesh must look like 4, '2x2' or (2, 2), got {mesh!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise PlanError(f"mesh must have positive sizes, got {mesh!r}")
    return shape


def compile_sharded(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor],
                    mesh: str | int | Sequence[int] | None = None, pipeline: str | None = None,
                    backend: str = "tvm") -> ShardedModule:
    if not dist.is_initialized():
        raise PlanError("a mesh compile runs inside a process group; call torch.distributed.init_process_group "
                        "first (or start under torchrun)")
    world = dist.get_world_size()
    mesh = parse_mesh(mesh) if mesh is not None else (world,)
    size = 1
    for m in mesh:
        size *= m
    if size != world:
        raise PlanError(f"mesh {'x'.join(map(str, mesh))} has {size} devices but the process group has {world}")
    pipeline = pipeline or f"shard{{mesh={'x'.join(map(str, mesh))}}}"
    planned = plan_model(model, example_inputs, pipeline, mesh)
    if planned.kind != "shard":
        raise PlanError("a mesh compile runs shard plans; run pipeline plans with kiln run")
    return ShardedModule(planned, mesh, backend)
