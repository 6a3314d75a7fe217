"""place-experts: the ILP against brute force and the baselines, capacities, the IR, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from moe_cases import brute_force, moe_ir, random_trace

from benchmarks.expert_traces import generate
from compiler.driver import module_decisions
from ir import parse_module
from passes import PipelineError, run_pipeline
from passes.experts import baselines as base
from passes.experts import read_placement
from passes.experts.cost import evaluate
from passes.experts.decide import decide
from passes.experts.ilp import load_caps, solve_joint, solve_layerwise
from passes.experts.trace import ExpertsError, from_json, load_trace


@pytest.mark.parametrize("experts,devices,k,seed", [(4, 2, 2, 0), (6, 3, 2, 1), (6, 2, 1, 2), (5, 2, 2, 3)])
def test_layerwise_ilp_equals_brute_force_on_one_layer(experts, devices, k, seed):
    trace = random_trace(1, experts, k, 24, 2, seed)
    cap = -(-experts // devices)
    got = solve_layerwise(trace, devices, cap, 20.0, base.contiguous(1, experts, devices))
    assert got.status == "optimal"
    assert evaluate(trace, got.placement).objective == pytest.approx(brute_force(trace, devices, cap))


@pytest.mark.parametrize("seed", [4, 5])
def test_joint_ilp_equals_brute_force_on_two_layers(seed):
    trace = random_trace(2, 4, 2, 16, 2, seed)
    got = solve_joint(trace, 2, 2, 20.0, base.contiguous(2, 4, 2))
    assert got.status == "optimal" and got.gap == pytest.approx(0.0, abs=1e-6)
    assert evaluate(trace, got.placement).objective == pytest.approx(brute_force(trace, 2, 2))
    assert got.bound == pytest.approx(evaluate(trace, got.placement).objective, rel=1e-6)


@pytest.mark.parametrize("devices", [2, 4])
def test_never_worse_than_a_baseline_and_capacities_and_load_cap_hold(devices):
    trace = generate(layers=4, experts=8, tokens=64, calls=2, seed=devices)
    d = decide(trace, devices, time_limit=5.0)
    for name in ("contiguous", "round_robin", "greedy"):
        assert d.summary["objective"] <= d.summary[f"{name}_objective"] + 1e-6, name
    assert (d.placement.slots_used() <= d.summary["capacity"]).all()
    if d.summary["chosen"] == "ilp":
        assert (d.cost.loads.max(axis=1) <= load_caps(trace, devices) + 1e-9).all()
    # The layer-wise ILP may not undercut brute force; it must beat contiguous on skewed routing.
    assert d.summary["cross_tokens"] < d.summary["contiguous_cross_tokens"]


def test_replication_adds_copies_of_hot_experts_within_capacity():
    trace = generate(layers=2, experts=8, tokens=128, calls=2, zipf=1.5, seed=3)
    plain = decide(trace, 4, capacity=3, time_limit=5.0)
    rep = decide(trace, 4, capacity=3, replicate=2, time_limit=5.0)
    assert rep.summary["objective"] <= plain.summary["objective"]
    assert rep.placement.extra_replicas() >= 1 and rep.summary["chosen"].endswith("+replicas")
    assert (rep.placement.slots_used() <= 3).all()
    assert rep.cost.max_mean < plain.cost.max_mean


def test_pass_writes_devices_on_routers_and_summary_on_module(tmp_path):
    trace = random_trace(2, 4, 2, 16, 2, 7)
    path = tmp_path / "t.json"
    trace.save(path)
    module = parse_module(moe_ir())
    run_pipeline(module, f'place-experts{{devices=2 trace="{path}" time-limit=5}}')
    text = str(module)
    assert text.count("kiln.expert_devices") == 2 and "kiln.moe_layer = 1" in text
    summary = module_decisions(module)["experts"]
    for key in ("status", "objective", "bound", "gap", "seconds", "contiguous_cross_tokens",
                "round_robin_max_mean_load", "greedy_cross_tokens", "chosen"):
        assert key in summary, key
    placement = read_placement(module, 2)
    assert evaluate(trace, placement).objective == pytest.approx(summary["objective"])
    again = parse_module(text)  # decisions survive the text round trip
    assert read_placement(again, 2) == placement


def _err(fn) -> str:
    with pytest.raises((ExpertsError, PipelineError)) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_input_gives_one_line_errors(tmp_path):
    other = tmp_path / "other.json"
    random_trace(3, 4, 2, 8, 1, 0).save(other)  # 3 layers; the module has 2
    module = parse_module(moe_ir())
    assert "another model" in _err(lambda: run_pipeline(module, f'place-experts{{devices=2 trace="{other}"}}'))
    trace = random_trace(2, 4, 2, 8, 1, 0)
    assert "only 4 experts" in _err(lambda: decide(trace, 8))
    assert "capacity 1 too small" in _err(lambda: decide(trace, 2, capacity=1))
    data = trace.to_json()
    assert "empty trace" in _err(lambda: from_json({**data, "calls": []}))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**data, "calls": [{"tokens": 0, "routing": [[], []]}]}))
    assert "empty trace" in _err(lambda: load_trace(empty))
    assert "does not exist" in _err(lambda: load_trace(tmp_path / "missing.json"))
    bad = {**data, "calls": [{"routing": np.full((2, 3, 2), 9).tolist()}]}
    assert "names expert 9" in _err(lambda: from_json(bad))
    assert "no MoE routing" in _err(lambda: run_pipeline(
        parse_module("builtin.module {\n  func.func @forward() {\n    func.return\n  }\n}\n"),
        f'place-experts{{devices=2 trace="{other}"}}'))
    assert "needs trace" in _err(lambda: run_pipeline(parse_module(moe_ir()), "place-experts{devices=2}"))


def test_kiln_opt_prints_the_decision_and_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from compiler.cli import app

    ir_file, trace_file = tmp_path / "moe.mlir", tmp_path / "t.json"
    ir_file.write_text(moe_ir())
    random_trace(2, 4, 2, 16, 2, 7).save(trace_file)
    runner = CliRunner()
    ok = runner.invoke(app, ["opt", str(ir_file), "-p", f'place-experts{{devices=2 trace="{trace_file}"}}'])
    assert ok.exit_code == 0 and ok.output.count("kiln.expert_devices") == 2, ok.output
    bad = runner.invoke(app, ["opt", str(ir_file), "-p", f'place-experts{{devices=8 trace="{trace_file}"}}'])
    assert bad.exit_code == 2 and "8 devices but only 4 experts" in bad.output and "Traceback" not in bad.output


def test_joint_solver_through_decide_reports_a_global_bound():
    trace = random_trace(2, 4, 2, 16, 2, 9)
    d = decide(trace, 2, solver="joint", time_limit=10.0)
    s = d.summary
    assert s["bound_kind"] == "global" and s["status"] in ("optimal", "time_limit")
    assert s["bound"] <= s["objective"] + 1e-6
    assert s["objective"] == pytest.approx(brute_force(trace, 2, 2)) or s["status"] == "time_limit"


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_polish_descends_on_the_replayed_objective_within_capacity_and_load_cap(devices):
    import time

    from passes.experts.cost import Placement
    from passes.experts.polish import polish

    trace = generate(layers=3, experts=16, tokens=96, calls=2, affinity=0.9, fan=2, seed=devices)
    cap, caps = -(-16 // devices), load_caps(trace, devices)
    start = base.contiguous(3, 16, devices)
    got, steps = polish(trace, start.primary(), devices, cap, caps, time.perf_counter() + 10.0)
    before, after = evaluate(trace, start), evaluate(trace, Placement.from_assignment(got, devices))
    assert steps > 0 and after.objective < before.objective
    assert after.cross < before.cross  # the return term is priced: cross tokens drop, not only load
    assert (Placement.from_assignment(got, devices).slots_used() <= cap).all()
    assert (after.loads.max(axis=1) <= caps + 1e-9).all()
    again, more = polish(trace, got, devices, cap, caps, time.perf_counter() + 10.0)
    assert more == 0 and (again == got).all()  # a fixed point: no improving swap or move is left


def test_replica_ilp_is_exact_on_one_top1_layer_and_never_worse_than_none():
    from passes.experts.replicas_ilp import replicate_ilp

    # One layer, top-1: no returns, no next layer, so the ILP's terms are the whole objective.
    trace = generate(layers=1, experts=8, top_k=1, tokens=120, calls=2, zipf=1.5, seed=11)
    home = base.contiguous(1, 8, 4)
    caps = load_caps(trace, 4)
    got = replicate_ilp(trace, home, 2, 3, caps, 10.0)
    assert got.statuses == ["optimal"]
    assert got.placement.extra_replicas() >= 1 and (got.placement.slots_used() <= 3).all()
    # Brute force over every set of at most 2 extra copies (one per expert) on free slots.
    import itertools

    from passes.experts.cost import Placement

    cands = [(e, d) for e in range(8) for d in range(4) if d != e // 2]
    best = evaluate(trace, home).objective
    for n in (1, 2):
        for combo in itertools.combinations(cands, n):
            if len({e for e, _ in combo}) < n:
                continue
            reps = [[e // 2] for e in range(8)]
            for e, d in combo:
                reps[e].append(d)
            p = Placement(4, (tuple(tuple(r) for r in reps),))
            if (p.slots_used() <= 3).all() and (evaluate(trace, p).loads.max() <= caps[0] + 1e-9):
                best = min(best, evaluate(trace, p).objective)
    assert evaluate(trace, got.placement).objective == pytest.approx(best)


@pytest.mark.parametrize("devices,seed", [(2, 1), (4, 2), (8, 3)])
def test_replication_through_decide_never_worse_and_capacities_hold(devices, seed):
    trace = generate(layers=3, experts=16, tokens=96, calls=2, zipf=1.2, seed=seed)
    cap = -(-16 // devices) + 1
    plain = decide(trace, devices, capacity=cap, time_limit=3.0)
    rep = decide(trace, devices, capacity=cap, replicate=2, time_limit=3.0)
    assert rep.summary["objective"] <= plain.summary["objective"] + 1e-6
    assert rep.summary["objective"] <= rep.summary["replicas_ilp_objective"] + 1e-6
    assert (rep.placement.slots_used() <= cap).all()
    assert max(sum(len(r) - 1 for r in row) for row in rep.placement.replicas) <= 2
