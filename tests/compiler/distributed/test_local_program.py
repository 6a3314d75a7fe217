"""The cut of a planned function into one rank's local programs, without a process group."""

from __future__ import annotations

import pytest
import torch

from compiler.distributed import local_program
from compiler.distributed.plan import capture, plan_model
from examples.zoo import gpt_layers, mlp
from ir import dtypes, parse_module
from ir.program import entry_function


def _cut(model, inputs, spec: str, mesh: tuple[int, ...], coords: tuple[int, ...]):
    planned = plan_model(capture(model, inputs), inputs, spec, mesh)
    fn = entry_function(parse_module(planned.module_text))
    return planned, local_program.cut(fn, planned.params, mesh, coords)


def test_megatron_block_is_local_program_all_reduce_local_program() -> None:
    model, inputs = gpt_layers(2, batch=4)
    planned, plan = _cut(model, inputs, "shard{mesh=2 solver=megatron cluster=a100-node}", (2,), (1,))
    glue = [s for s in plan.steps if isinstance(s, local_program.Glue)]
    assert sum(g.kind == "all_reduce" for g in glue) == planned.predicted["all_reduce"]
    assert len(plan.segments) == planned.predicted["all_reduce"] + 1
    for seg in plan.segments:  # every parameter of a local program is this rank's half or the whole
        for name, tensor in seg.program.params.items():
            whole = planned.params[name.split("@")[0]]
            assert tensor.numel() in (whole.numel(), whole.numel() // 2), name
    halves = [n for seg in plan.segments for n, t in seg.program.params.items()
              if t.numel() * 2 == planned.params[n.split("@")[0]].numel()]
    assert halves  # column- and row-parallel weights really are split
    for seg in plan.segments:  # local shapes on the IR: no value wider than the whole model's
        for op in seg.program.kiln_ops():
            assert all(d > 0 for r in op.results for d in dtypes.shape_of(r.type))


def test_an_unsplit_plan_is_one_local_program_equal_to_eager() -> None:
    model, inputs = mlp(batch=4)
    planned, plan = _cut(model, inputs, "shard{mesh=2 solver=replicate}", (2,), (0,))
    assert len(plan.steps) == 1 and not isinstance(plan.steps[0], local_program.Glue)
    local_program.build(plan, "eager")
    seg = plan.segments[0]
    args = [inputs[i] for i in planned.input_order]
    env = dict(zip(plan.arg_keys, args))
    out = seg.kernel(*[env[k] for k in seg.inputs])
    assert torch.allclose(out[0], planned.eager_outputs[0], atol=1e-5)


def test_a_microbatch_that_does_not_split_on_the_submesh_is_named() -> None:
    from compiler.distributed.plan import PlanError

    model, inputs = gpt_layers(2, batch=2)
    with pytest.raises(PlanError, match=r"^stage 0: a microbatch of shape \(1, .*\) does not split as \(0,\) on mesh \(2,\)$"):
        plan_model(capture(model, inputs), inputs,
                   "pipeline{stages=2 microbatches=2 mesh=4},shard{mesh=2 solver=data-parallel}", (2, 2))
