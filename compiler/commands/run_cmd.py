"""`kiln run FILE.py:factory --nproc N [--mesh 2x2] [--pipeline ...] [--check]`: run a parallel plan.

The parent process loads the model, captures it, and runs the pipeline (default
`shard{mesh=N}`), so the plan is decided once and printed in the report; it then spawns
N gloo ranks on loopback (`compiler/distributed/launch.py`); started by
`torchrun --nproc-per-node N --no-python -- kiln run ... --nproc N`, each process is one rank
of torchrun's group instead (every rank plans, rank 0 reports).
Each rank parses the planned IR, keeps its own shard of every parameter, cuts its part into
local programs built by `--backend` (tvm, or eager: Kiln's interpreter;
`compiler/distributed/local_program.py`) and runs them with the collectives the plan names
between them (`shard_runtime.py`; `pipeline_runtime.py` for stages, sharded or not).
`--check` gathers the output and compares it with single-device eager; the report also
sets the collectives each rank actually issued beside those the plan predicted.

Hook for expert parallelism (issue 11): when the pipeline contains `place-experts{...}`,
each rank is dispatched instead to

    compiler.distributed.experts_runtime.run_rank(
        ctx: RankContext, model_spec: str, pipeline: str, check: bool, atol: float, rtol: float,
        backend: str  # --backend: the local experts' build (tvm | eager)
    ) -> dict

(imported lazily inside the rank). `ctx` carries rank, world_size, mesh and timeout_s; the
process group is already initialized (gloo, one thread per rank). The function loads the
model itself, runs its plan, and returns a JSON-friendly dict; rank 0's dict is the report,
and a key `"ok": False` makes `--check` exit with code 1.
"""

from __future__ import annotations

import json
import sys

from compiler.cli import fail

EXPERTS_TARGET = "compiler.distributed.experts_runtime:run_rank"
SHARD_TARGET = "compiler.distributed.shard_runtime:run_rank"
PIPELINE_TARGET = "compiler.distributed.pipeline_runtime:run_rank"


def parse_mesh(mesh: str | None, nproc: int) -> tuple[int, ...]:
    """`"2x2"` -> (2, 2); checked against the world size (one-line ValueError)."""
    if mesh is None:
        return (nproc,)
    try:
        shape = tuple(int(p) for p in mesh.lower().split("x"))
    except ValueError:
        raise ValueError(f"--mesh must look like 4 or 2x2, got {mesh!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"--mesh must have positive sizes, got {mesh!r}")
    size = 1
    for s in shape:
        size *= s
    if size != nproc:
        raise ValueError(f"mesh {mesh} has {size} devices but --nproc is {nproc}")
    return shape


def run_run(
    model_spec: str, nproc: int, mesh_text: str | None, pipeline: str | None, check: bool,
    atol: float, rtol: float, as_json: bool, timeout_s: float, backend: str = "tvm",
) -> None:
    from compiler.distributed.launch import DistributedRunError
    from compiler.model_loader import ModelSpecError, load_model

    try:
        mesh = parse_mesh(mesh_text, nproc)
    except ValueError as err:
        fail(str(err))
    if backend not in ("tvm", "eager"):
        fail(f"--backend must be tvm or eager, got {backend!r}")
    mesh_opt = "x".join(str(m) for m in mesh)
    pipeline = pipeline or f"shard{{mesh={mesh_opt}}}"
    try:
        if "place-experts" in pipeline:
            results = _run_experts(model_spec, nproc, mesh, pipeline, check, atol, rtol, timeout_s, backend)
        else:
            from compiler.distributed.plan import PlanError, plan_model

            model, inputs, _ = load_model(model_spec)
            try:
                planned = plan_model(model, inputs, pipeline, mesh)
            except PlanError as err:
                fail(str(err))
            expected = [t.detach() for t in planned.eager_outputs] if check else None
            target = PIPELINE_TARGET if planned.kind == "pipeline" else SHARD_TARGET
            results = launch(target, nproc, (planned.payload(), tuple(inputs), expected, atol, rtol, 3, backend),
                             mesh, timeout_s)
    except ModelSpecError as err:
        fail(str(err))
    except DistributedRunError as err:
        fail(str(err))
    report = dict(results[0])
    if "collectives_match" in report:
        report["collectives_match"] = all(r.get("collectives_match") for r in results)
    if "ok" in report:
        report["ok"] = all(r.get("ok", True) for r in results)
    report["ranks"] = nproc
    report["mesh"] = mesh_opt
    if as_json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
    else:
        for key, value in report.items():
            sys.stdout.write(f"{key}: {value}\n")
    if check and report.get("ok") is False:
        fail(f"output differs from eager: max abs error {report.get('max_abs_error')}", code=1)


def _run_experts(model_spec: str, nproc: int, mesh: tuple[int, ...], pipeline: str, check: bool,
                 atol: float, rtol: float, timeout_s: float, backend: str = "tvm") -> list[dict]:
    import importlib.util

    if importlib.util.find_spec("compiler.distributed.experts_runtime") is None:
        fail("place-experts needs compiler/distributed/experts_runtime.py, which is not installed yet")
    return launch(EXPERTS_TARGET, nproc, (model_spec, pipeline, check, atol, rtol, backend), mesh, timeout_s)


def launch(target: str, nproc: int, args: tuple, mesh: tuple[int, ...], timeout_s: float) -> list:
    """Spawn the ranks, or, under torchrun, be one: join its group and run this rank only.

    Under torchrun every rank plans (the plan is deterministic) and rank 0 reports.
    """
    import typer

    from compiler.distributed.launch import (
        DistributedRunError,
        RankContext,
        init_from_env,
        resolve,
        spawn,
        under_torchrun,
    )

    if not under_torchrun():
        return spawn(target, nproc, args, mesh=mesh, timeout_s=timeout_s)
    rank, world = init_from_env(timeout_s)
    if world != nproc:
        raise DistributedRunError(f"torchrun started {world} ranks but --nproc is {nproc}")
    result = resolve(target)(RankContext(rank, world, mesh, timeout_s), *args)
    if rank != 0:
        raise typer.Exit(0)
    return [result]
