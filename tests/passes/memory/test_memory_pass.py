"""`map-memory` as a pass: options, one-line errors, decisions on the IR, tier capacities."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xdsl.dialects.builtin import DictionaryAttr

from compiler.driver import module_decisions
from ir import parse_module, print_module
from passes import PipelineError, parse_pipeline, run_pipeline
from passes.memory.lifetimes import Buffer, lifetimes
from passes.memory.offsets_ilp import plan_offsets
from passes.memory.tiers import Item, Tier, TierError, plan_tiers, tiers_for


@pytest.fixture(scope="module")
def gpt_text(fused_zoo):
    return fused_zoo["gpt"].text


def fresh(text: str):
    return parse_module(text)


@pytest.mark.parametrize("spec, message", [
    ("map-memory{solver=magic}", "unknown solver 'magic'"),
    ("map-memory{tiers=disk}", "unknown tiers 'disk'"),
    ("map-memory{tiers=fpga part=xc9000}", "unknown FPGA part 'xc9000'"),
    ("map-memory{tiers=gpu part=v100}", "unknown GPU for tiers=gpu 'v100'"),
    ("map-memory{time-limit=0}", "time-limit must be > 0"),
])
def test_bad_options_are_one_line_errors(spec, message):
    with pytest.raises(PipelineError, match=message) as err:
        parse_pipeline(spec)
    assert "\n" not in str(err.value)


def test_a_budget_too_small_for_any_plan_is_a_one_line_error(gpt_text):
    module = fresh(gpt_text)
    with pytest.raises(TierError, match="smaller than the arena.*no tier plan fits") as err:
        run_pipeline(module, "map-memory{tiers=gpu budget=1000.0}")
    assert "\n" not in str(err.value)


def test_decisions_are_on_the_ir_and_in_the_summary(gpt_text):
    module = fresh(gpt_text)
    run_pipeline(module, "map-memory", verify=True)
    text = print_module(module)
    assert "memory = {offset = array<i64:" in text
    memory = module_decisions(module)["memory"]
    for key in ("arena_bytes", "best_fit_bytes", "lower_bound_bytes", "status", "gap", "solve_seconds", "bound_bytes"):
        assert key in memory
    assert memory["arena_bytes"] % 64 == 0


def _tier_use(module, tier: str, block_bytes: int) -> tuple[int, list[int]]:
    """Blocks of `tier` used by weights, and by live buffers at each step, read off the IR."""
    from ir import dtypes
    from ir.program import entry_function

    fn = entry_function(module)
    life = lifetimes(fn)
    weights = 0
    for op in fn.body.block.ops:
        entry = op.attributes.get("memory")
        if op.name in ("kiln.param", "kiln.constant") and isinstance(entry, DictionaryAttr):
            if entry.data["tier"].data == tier:
                weights += -(-dtypes.nbytes(op.results[0].type) // block_bytes)
    per_step = [weights] * life.num_steps
    for b, value in zip(life.buffers, life.values):
        chosen = value.owner.attributes["memory"].data.get("tier")
        if chosen is not None and chosen.data == tier:
            for t in range(b.start, b.end + 1):
                per_step[t] += -(-b.nbytes // block_bytes)
    return weights, per_step


def test_fpga_tiers_fit_a_small_part(gpt_text):
    """gpt's weights (6.5 MB in 16-bit codes) do not fit a Zynq UltraScale+ ZU9EG's 1824
    BRAMs (4.1 MB) beside its lookup tables: the plan fits anyway, weights in DDR. The HLS
    design keeps every array for the whole call, so BRAM use is a sum."""
    from ir.program import entry_function
    from passes.memory.fpga_arrays import hls_arrays

    module = fresh(gpt_text)
    run_pipeline(module, "map-memory{tiers=fpga part=xczu9eg-ffvb1156-2-e}", verify=True)
    memory = module_decisions(module)["memory"]
    assert memory["tiers_status"] in ("optimal", "time_limit")
    assert memory["tiers_objective_us"] <= memory["tiers_greedy_us"] + 1e-6 <= memory["tiers_slowest_us"] + 1e-6
    bram = ddr = 0
    for array in hls_arrays(entry_function(module)):
        tier = array.value.owner.attributes["memory"].data["tier"].data
        bram += -(-array.nbytes // (18 * 1024 // 8)) if tier == "bram" else 0
        ddr += array.nbytes if tier == "ddr" else 0
        assert array.weight or tier != "ddr" or not array.movable
    # gelu, softmax and layer norm tables keep their blocks: the arrays get the rest
    assert memory["tier_bram_reserved_tables"] > 0
    assert memory["tier_bram_capacity"] + memory["tier_bram_reserved_tables"] == 1824
    assert 0 < bram == memory["tier_bram_used"] <= memory["tier_bram_capacity"]
    assert ddr == memory["tier_ddr_used"] > 0


def test_fpga_tiers_refuse_a_part_the_tables_leave_too_small(gpt_text):
    """On a Zynq 7020 (280 BRAMs) gpt's lookup tables leave too little for the activations
    that must stay on chip: no plan fits, and the error names the array."""
    module = fresh(gpt_text)
    with pytest.raises(PipelineError, match=r"map-memory: \S+ \(\d+ bytes\) must be in bram or uram"):
        run_pipeline(module, "map-memory{tiers=fpga part=xc7z020clg400-1}")


def test_gpu_tiers_keep_device_bytes_under_the_budget(gpt_text):
    module = fresh(gpt_text)
    run_pipeline(module, "map-memory")
    arena = module_decisions(module)["memory"]["arena_bytes"]
    budget = arena + 4_000_000  # about a third of gpt's weights
    module = fresh(gpt_text)
    run_pipeline(module, f"map-memory{{tiers=gpu part=h100 budget={float(budget)}}}")
    memory = module_decisions(module)["memory"]
    device, _ = _tier_use(module, "device", 1)
    host, _ = _tier_use(module, "host", 1)
    assert 0 < device <= budget - arena and host > 0
    assert memory["tiers_objective_us"] <= memory["tiers_greedy_us"] + 1e-6


@st.composite
def tier_cases(draw):
    steps = draw(st.integers(1, 6))
    items = []
    for i in range(draw(st.integers(1, 10))):
        start = draw(st.integers(0, steps - 1))
        end = draw(st.integers(start, steps - 1))
        nbytes = draw(st.integers(1, 5000))
        items.append(Item(f"v{i}", nbytes, nbytes * draw(st.integers(1, 4)), start, end))
    fast = Tier("fast", 1000, draw(st.integers(0, 6)), 9e9)
    mid = Tier("mid", 4000, draw(st.integers(0, 2)), 18e9)
    return items, [fast, mid, Tier("slow", 1, float("inf"), 0.0, 1e9)], steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tier_cases())
def test_tier_plans_respect_capacity_at_every_step(case):
    items, tiers, steps = case
    plan = plan_tiers(items, tiers, steps, "ilp", 5.0)
    assert plan.objective_us <= plan.greedy_us + 1e-6
    for tier in tiers[:2]:
        for t in range(steps):
            used = sum(tier.blocks(it.nbytes) for it, c in zip(items, plan.choice) if c == tier.name and it.start <= t <= it.end)
            assert used <= tier.capacity


def test_unknown_tier_kind_is_refused():
    with pytest.raises(TierError, match="unknown tiers 'ssd'"):
        tiers_for("ssd", "", 0.0, 0)


def test_time_limit_keeps_a_valid_plan_at_least_as_good_as_best_fit():
    rng = random.Random(3)
    buffers = []
    for i in range(60):
        start = rng.randrange(40)
        buffers.append(Buffer(i, rng.randint(1, 50), start, min(39, start + rng.randrange(6))))
    plan = plan_offsets(buffers, "ilp", time_limit=0.05, shortcut=False)
    assert plan.status in ("optimal", "time_limit", "fallback")
    assert plan.lower_bound <= plan.arena <= plan.best_fit
    assert 0.0 <= plan.gap < 1.0
