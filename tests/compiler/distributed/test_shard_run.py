"""Sharded plans on real gloo ranks: outputs equal eager, collectives issued equal the plan's.

One spawned 2-rank group runs every default check (mlp, encoder, gpt under the ILP plan and
each baseline); 4 ranks and a 2x2 mesh are slow tests.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from compiler.distributed.launch import DistributedRunError, spawn
from compiler.distributed.plan import PlanError, capture, plan_model
from examples.zoo import encoder, gpt_layers, mlp

SOLVERS = ("ilp", "data-parallel", "megatron", "replicate")
# Plans made for an A100 node's links so that data parallel and Megatron really split
# work; the plans run on gloo all the same (a plan is valid on any transport).
CLUSTER = "a100-node"


def _jobs(mesh: tuple[int, ...], backend: str = "tvm") -> tuple[list[tuple], list[str]]:
    jobs, names = [], []
    mesh_opt = "x".join(map(str, mesh))
    # batch 4, so data parallel splits on 4 ranks too
    for name, factory in (("mlp", mlp), ("encoder", encoder), ("gpt", lambda batch: gpt_layers(4, batch=batch))):
        model, inputs = factory(batch=4)
        captured = capture(model, inputs)
        for solver in SOLVERS:
            planned = plan_model(captured, inputs, f"shard{{mesh={mesh_opt} solver={solver} cluster={CLUSTER}}}", mesh)
            jobs.append(("shard", planned.payload(), tuple(inputs), planned.eager_outputs, 1e-4, 1e-4, backend))
            names.append(f"{name}/{solver}")
        if len(mesh) == 1 and name != "mlp":  # one stage per rank, 2 microbatches
            planned = plan_model(captured, inputs, f"pipeline{{stages={mesh[0]} microbatches=2}}", mesh)
            jobs.append(("pipeline", planned.payload(), tuple(inputs), planned.eager_outputs, 1e-4, 1e-4, backend))
            names.append(f"{name}/pipeline")
        if mesh == (2, 2) and name != "mlp":  # each stage's 2-device submesh runs the shard plan
            for solver in ("ilp", "megatron"):
                spec = f"pipeline{{stages=2 microbatches=2 mesh=4}},shard{{mesh=2 solver={solver} cluster={CLUSTER}}}"
                planned = plan_model(captured, inputs, spec, mesh)
                jobs.append(("pipeline", planned.payload(), tuple(inputs), planned.eager_outputs, 1e-4, 1e-4, backend))
                names.append(f"{name}/pipeline+{solver}")
    # planned inside the group by every rank: the public compile_model(..., mesh=...)
    model, inputs = gpt_layers(2, batch=4)
    spec = f"shard{{mesh={mesh_opt} solver=megatron cluster={CLUSTER}}}"
    jobs.append(("compiled", model, spec, tuple(inputs), [model(*inputs).detach()], 1e-4, 1e-4, backend))
    names.append("gpt/compiled")
    return jobs, names


def _check(mesh: tuple[int, ...], backend: str = "tvm") -> None:
    jobs, names = _jobs(mesh, backend)
    world = 1
    for m in mesh:
        world *= m
    results = spawn("compiler.distributed.shard_runtime:run_many", world, (jobs,), mesh=mesh, timeout_s=60)
    split = set()
    for rank_reports in results:
        for name, report in zip(names, rank_reports):
            assert report.get("ok", True), (name, report)  # a pipeline checks on rank 0 only
            assert report["issued"] == report["predicted"], (name, report)
            if "sent_mb" in report:  # a shard plan: its local programs were built by the backend
                assert report["backend"] == backend and report["local_programs"] >= 1, (name, report)
            if "sent_mb" in report:  # bytes on the wire equal the cost model's, rank by rank
                assert report["sent_mb"] == pytest.approx(report["modeled_comm_mb"], rel=1e-6, abs=1e-9), (name, report)
            if report["issued"]:
                split.add(name)
    # the baselines differ: Megatron all-reduces, data parallel gathers once at the end
    assert {"gpt/megatron", "gpt/data-parallel", "encoder/megatron"} <= split
    assert not any(n.endswith("/replicate") for n in split)
    for rank_reports in results:
        compiled = rank_reports[names.index("gpt/compiled")]
        assert compiled["backend"] == backend and compiled["local_programs"] > 1, compiled
        assert compiled["issued"].get("all_reduce"), compiled  # Megatron's sums ran between local programs
        world_text = "x".join(map(str, mesh))
        assert compiled["wrong_mesh"] == (f"mesh {world * 2} has {world * 2} devices but the process group "
                                          f"has {world}"), (world_text, compiled)
    pipelines = [n for n in names if "/pipeline" in n]
    for name in pipelines:
        assert results[0][names.index(name)]["ok"], (name, results[0][names.index(name)])
        assert all(r[names.index(name)]["backend"] == backend for r in results)
    if mesh == (2, 2):  # Megatron's all-reduces ran inside both stages' submeshes
        for r in results:
            assert r[names.index("gpt/pipeline+megatron")]["issued"].get("all_reduce"), r[names.index("gpt/pipeline+megatron")]
    else:
        assert {"gpt/pipeline", "encoder/pipeline"} <= set(pipelines)


def test_two_ranks_every_plan_equals_eager() -> None:
    _check((2,))


@pytest.mark.slow
def test_four_ranks_every_plan_equals_eager() -> None:
    _check((4,))


@pytest.mark.slow
def test_two_by_two_mesh_every_plan_equals_eager() -> None:
    _check((2, 2))


def test_a_rank_that_raises_stops_the_others_with_one_line() -> None:
    start = time.perf_counter()
    with pytest.raises(DistributedRunError, match=r"rank 1 failed: ValueError: shard 3 of weight w1 is missing"):
        spawn("compiler.distributed.selftest:raise_on_last", 2, timeout_s=20)
    assert time.perf_counter() - start < 40


def test_a_rank_that_dies_stops_the_others_within_the_timeout() -> None:
    start = time.perf_counter()
    with pytest.raises(DistributedRunError, match=r"rank 1 (died|failed)") as err:
        spawn("compiler.distributed.selftest:exit_on_last", 2, timeout_s=10)
    assert "\n" not in str(err.value)
    assert time.perf_counter() - start < 40


def test_plan_mesh_must_match_the_run() -> None:
    model, inputs = mlp()
    with pytest.raises(PlanError, match=r"plans for mesh 2x2 but the run has 4 \(4 ranks\)"):
        plan_model(model, inputs, "shard{mesh=2x2}", (4,))
    with pytest.raises(PlanError, match="has no shard or pipeline pass"):
        plan_model(model, inputs, "kiln-canonicalize", (2,))


def test_batch_not_divisible_by_microbatches_is_refused() -> None:
    model, inputs = gpt_layers(2, batch=2)
    with pytest.raises(PlanError, match="batch 2 is not divisible by 4 microbatches"):
        plan_model(model, inputs, "pipeline{stages=2 microbatches=4}", (2,))
    with pytest.raises(PlanError, match=r"needs --nproc 2, got mesh 4"):
        plan_model(model, inputs, "pipeline{stages=2 microbatches=2}", (4,))


def test_sharded_pipeline_needs_a_stages_by_submesh_mesh() -> None:
    model, inputs = gpt_layers(2, batch=4)
    spec = "pipeline{stages=2 microbatches=2 mesh=4},shard{mesh=2}"
    with pytest.raises(PlanError, match=r"runs on --mesh 2x2 \(stages x submesh\), got pipeline mesh 4 and run mesh 4$"):
        plan_model(model, inputs, spec, (4,))
    planned = plan_model(model, inputs, spec, (2, 2))
    assert planned.kind == "pipeline" and set(planned.predicted) == {0, 1}  # collectives per stage


@pytest.mark.parametrize("args, message", [
    (["--backend", "triton"], "--backend must be tvm or eager, got 'triton'"),
    (["--mesh", "2x2"], "mesh 2x2 has 4 devices but --nproc is 2"),
], ids=["unknown-backend", "mesh-vs-world-size"])
def test_cli_bad_option_is_one_line(args, message) -> None:
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "run", "examples/zoo.py:mlp", "--nproc", "2",
                           *args], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unsharded_numbers_are_eager_exact() -> None:
    model, inputs = mlp()
    planned = plan_model(model, inputs, "shard{mesh=2 solver=replicate}", (2,))
    assert planned.predicted == {}
    assert torch.equal(planned.eager_outputs[0], model(*inputs))
