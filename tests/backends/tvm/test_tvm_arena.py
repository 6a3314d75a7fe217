"""TVM with `map-memory`: every planned intermediate sits at its offset in one arena.

Outputs match eager (and the build without the arena); the bytes one call allocates are
the arena's; and a wrong plan (everything at offset 0, the lifetime check off) gives wrong
outputs, which shows the kernels really write into the shared arena (no silent copies).
"""

from __future__ import annotations

import pytest
import torch

from backends.tvm.pipeline import kiln_pipeline
from compiler import compile_model
from examples.zoo import load


def _compile(name: str, pipeline: str):
    model, inputs = load(name)
    compiled = compile_model(model, inputs, target="tvm", pipeline=pipeline, use_cache=False)
    return model, inputs, compiled


def test_map_memory_ends_the_default_pipeline():
    assert kiln_pipeline().endswith(",map-memory")


def _check(name: str) -> dict:
    model, inputs, compiled = _compile(name, kiln_pipeline())
    with torch.no_grad():
        expected = model(*inputs)
        first, second = compiled(*inputs), compiled(*inputs)
    torch.testing.assert_close(first, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second, first, atol=0, rtol=0)  # the arena is reused
    (part,) = compiled.report["partitions"]
    memory = part["decisions"]["memory"]
    assert memory["tvm_arena_placed"] == memory["tvm_arena_planned"] > 0
    assert memory["tvm_allocated_bytes"] == memory["arena_bytes"]  # nothing left to TVM's planner
    assert memory["arena_bytes"] <= memory["tvm_plan_bytes"]
    return memory


def test_arena_run_matches_eager():
    _check("mlp")  # gpt runs from the arena in the test below


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "encoder", "gpt", "moe"])
def test_arena_run_matches_eager_other_zoo(name):
    _check(name)


def test_a_wrong_plan_corrupts_outputs():
    import tvm
    from tvm import relax

    from backends.tvm import library
    from backends.tvm.arena import ArenaReport, arena_pipeline, arena_size
    from backends.tvm.compile import build_executable
    from backends.tvm.lower import lower_program
    from backends.tvm.target import cpu_target
    from compiler.capture import convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from passes import run_pipeline

    model, inputs = load("gpt")
    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    program = convert_nodes(part, plan.consts, users_outside(part)).program
    run_pipeline(program.module, kiln_pipeline())
    library.register_library()
    lowered = lower_program(program)
    params = [t.detach().contiguous() for t in lowered.bind(program.params)]
    target = cpu_target()
    outputs = []
    for offsets, check in ((lowered.arena_offsets, True), (dict.fromkeys(lowered.arena_offsets, 0), False)):
        report = ArenaReport()
        pipeline = arena_pipeline(target, offsets, arena_size(program.module), report, check)
        executable, _ = build_executable(lower_program(program).module, target, lowered.grouped, None, pipeline)
        (out,) = relax.VirtualMachine(executable, tvm.cpu())["main"](*inputs, *params)
        outputs.append(torch.from_dlpack(out).clone())
        assert report.placed == len(offsets)
    with torch.no_grad():
        expected = model(*inputs)
    torch.testing.assert_close(outputs[0], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(outputs[1], expected, atol=1e-2)
