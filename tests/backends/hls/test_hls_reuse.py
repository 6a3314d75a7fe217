"""The reuse-factor decision (passes/reuse_factor.py) and its cost model (cost_models/fpga.py).

The ILP must find what brute force finds on small instances, for both objectives, and
never exceed the budget; the uniform hls4ml-style baseline must never beat it; the pass
must write a factor on every multiply-accumulate op and a summary on the module.
"""

from __future__ import annotations

import random

import pytest
from hls_harness import program_of

from cost_models import fpga
from passes import parse_pipeline
from passes.reuse_factor import (
    ReuseFactorError,
    ReuseFactorPass,
    ReuseProblem,
    brute_force,
    nearest,
    solve_ilp,
    uniform_baseline,
)

PART = fpga.PARTS["xcu280-fsvh2892-2L-e"]


def _random_problem(seed: int, objective: str) -> ReuseProblem:
    rng = random.Random(seed)
    macs = []
    for i in range(rng.randint(2, 4)):
        k, n = rng.choice([4, 6, 8, 12, 16, 64, 96]), rng.choice([2, 3, 4, 8, 10])
        macs.append(fpga.MacLayer(f"l{i}", rng.choice([1, 2, 4, 9]), k, n, k * n, rng.choice([4, 8, 16, 18]),
                                  16, 24, const_weights=rng.random() < 0.8))
    fixed = [fpga.elementwise_layer("relu", "relu", rng.randint(1, 8), 8, 16)]
    full = ReuseProblem(macs, fixed, PART, fpga.Resources(10**9, 10**9, 10**9), objective)
    most = full.resources([1] * len(macs))
    least = full.resources([max(c) for c in full.candidates])
    frac = rng.uniform(0.0, 1.0)
    budget = fpga.Resources(int(least.dsp + frac * (most.dsp - least.dsp)), least.bram_18k + rng.randint(0, 40),
                            int(least.lut + rng.uniform(0.2, 1.0) * (most.lut - least.lut)))
    return ReuseProblem(macs, fixed, PART, budget, objective)


@pytest.mark.parametrize("objective", ["latency", "ii"])
@pytest.mark.parametrize("seed", range(12))
def test_ilp_matches_brute_force_and_respects_the_budget(seed: int, objective: str) -> None:
    problem = _random_problem(seed, objective)
    best = brute_force(problem)
    decision = solve_ilp(problem, time_limit=10)
    if best is None:
        assert decision.status in ("infeasible", "fallback")
        return
    assert decision.status == "optimal"
    assert problem.fits(decision.choice)
    assert problem.cost(decision.choice) == problem.cost(best)


@pytest.mark.parametrize("seed", range(6))
def test_the_uniform_baseline_fits_and_never_beats_the_ilp(seed: int) -> None:
    problem = _random_problem(seed, "latency")
    base = uniform_baseline(problem)
    if base is None:
        return
    assert problem.fits(base[1])
    assert problem.latency(solve_ilp(problem).choice) <= problem.latency(base[1])


def test_nearest_valid_factor_follows_hls4ml() -> None:
    assert nearest([1, 2, 4, 8, 16], 6) == 8  # a tie goes to the larger factor
    assert nearest([1, 3, 9], 4) == 3


def test_a_larger_reuse_factor_trades_latency_for_resources() -> None:
    layer = fpga.MacLayer("fc", 1, 512, 512, 512 * 512, 16, 16, 40)
    lat = [layer.latency(r, PART) for r in (1, 16, 256)]
    dsp = [layer.resources(r, PART).dsp for r in (1, 16, 256)]
    assert lat == sorted(lat) and dsp == sorted(dsp, reverse=True)
    assert layer.resources(256, PART).bram_18k > 0 and layer.resources(16, PART).bram_18k == 0  # LUTRAM below 64
    assert fpga.dsp_per_mult(4, 16, PART) == 0 and fpga.dsp_per_mult(16, 16, PART) == 1
    assert fpga.dsp_per_mult(32, 32, PART) == 4


def test_the_pass_writes_factors_and_a_summary_under_the_part_budget() -> None:
    _, _, program = program_of("mlp")
    summary = {k: v for k, v in _summary(program).items()}
    linears = [op for op in program.forward.body.block.ops if op.name == "kiln.linear"]
    factors = [op.attributes["reuse_factor"].value.data for op in linears]
    assert len(factors) == 4 and all(f >= 1 for f in factors)
    assert summary["reuse"] == ",".join(f"linear@{i}:{f}" for i, f in
                                        zip([_index(program, op) for op in linears], factors))
    assert summary["dsp"] <= summary["budget_dsp"] == PART.dsp
    assert summary["bram_18k"] <= summary["budget_bram_18k"] and summary["lut"] <= summary["budget_lut"]
    assert summary["status"] == "optimal"
    assert summary["latency_cycles"] <= summary["baseline_latency_cycles"]
    assert summary["latency_us"] == pytest.approx(summary["latency_cycles"] * 5 / 1000)


def test_a_small_part_gets_larger_factors() -> None:
    _, _, program = program_of("mlp")
    big = _summary(program)
    ReuseFactorPass(part="xczu9eg-ffvb1156-2-e", clock_ns=4.0).apply(None, program.module)  # type: ignore[arg-type]
    small = _summary(program)
    assert small["budget_dsp"] == 2520 and small["dsp"] <= 2520
    assert small["latency_cycles"] > big["latency_cycles"]


def test_pass_options_are_checked() -> None:
    with pytest.raises(ReuseFactorError, match="objective"):
        ReuseFactorPass(objective="power")
    with pytest.raises(ReuseFactorError, match="unknown FPGA part 'xc9000'"):
        ReuseFactorPass(part="xc9000")
    [p] = parse_pipeline("hls-reuse{part=xc7z020clg400-1 clock-ns=10 objective=ii}")
    assert isinstance(p, ReuseFactorPass) and p.clock_ns == 10.0 and p.objective == "ii"


def _summary(program) -> dict:
    from ir.attrs import from_attr

    attr = program.module.attributes["kiln.hls_reuse"]
    return {k: from_attr(v) for k, v in attr.data.items()}


def _index(program, op) -> int:
    return list(program.forward.body.block.ops).index(op)
