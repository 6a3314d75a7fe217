"""`map-memory` on the zoo: plans are valid and tight, and running from the arena gives
outputs identical to running without it (eager interpreter; Triton in its own test)."""

from __future__ import annotations

import pytest
import torch
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, i64

from backends.eager.arena import ArenaInterpreter, arena_bytes, planned_offsets
from compiler.driver import module_decisions
from examples.zoo import ZOO
from passes import run_pipeline
from passes.memory.bestfit import best_fit, check_plan
from passes.memory.lifetimes import ALIGN, Buffer, lifetimes


@pytest.fixture(scope="module")
def zoo(fused_zoo):
    return {name: (f.program(), f.inputs, f.reference) for name, f in fused_zoo.items()}


@pytest.mark.parametrize("name", list(ZOO))
def test_arena_run_is_identical_and_plan_is_tight(zoo, name):
    program, inputs, reference = zoo[name]
    run_pipeline(program.module, "map-memory{reorder=true}", verify=True)
    memory = module_decisions(program.module)["memory"]
    assert memory["lower_bound_bytes"] <= memory["arena_bytes"] <= memory["best_fit_bytes"]
    assert memory["arena_bytes"] <= 1.02 * memory["lower_bound_bytes"]  # the goal: within 2%
    assert memory["arena_bytes"] < memory["no_reuse_bytes"]
    assert memory["reorder_peak_after_bytes"] <= memory["reorder_peak_before_bytes"]
    life = lifetimes(program.forward)
    offsets = {v: o for ops in life.steps for op in ops for v, o in zip(op.results, planned_offsets(op))}
    check_plan(life.buffers, [offsets[v] // ALIGN for v in life.values])
    runner = ArenaInterpreter(program.forward, arena_bytes(program.module))
    for _ in range(2):  # the arena is reused across calls
        with torch.no_grad():
            outputs = runner(inputs, program.params)
        assert all(torch.equal(a, b) for a, b in zip(outputs, reference))


def test_a_wrong_plan_changes_the_outputs(fused_zoo):
    """The check above can fail: a plan that lets each buffer die right after its producer
    step (so later steps overwrite values still to be read) gives different outputs, or
    torch refuses a copy whose source and destination overlap."""
    program, inputs, reference = fused_zoo["gpt"].program(), fused_zoo["gpt"].inputs, fused_zoo["gpt"].reference
    run_pipeline(program.module, "map-memory")
    life = lifetimes(program.forward)
    short = [Buffer(b.index, b.size, b.start, b.start) for b in life.buffers]
    wrong = dict(zip(life.values, best_fit(short)))
    for ops in life.steps:
        for op in ops:
            if op.attributes.get("memory") is not None:
                offsets = [wrong[r] * ALIGN if r in wrong else -1 for r in op.results]
                op.attributes["memory"] = DictionaryAttr({"offset": DenseArrayBase.from_list(i64, offsets)})
    runner = ArenaInterpreter(program.forward, arena_bytes(program.module))
    try:
        with torch.no_grad():
            outputs = runner(inputs, program.params)
    except RuntimeError as err:  # or torch refuses to copy a value onto bytes it reads
        assert "same memory location" in str(err) or "single memory location" in str(err)
        return
    assert not all(torch.equal(a, b) for a, b in zip(outputs, reference))
