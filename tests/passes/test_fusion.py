"""The fuse pass: the ILP is exact (matches brute force, with and without recompute), never
worse than greedy, and safe (same results, groups that can run in order)."""

from __future__ import annotations

import graphlib
import itertools
import math
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

import ir
from compiler.driver import module_decisions
from cost_models.hardware import get_hardware
from cost_models.roofline import roofline_seconds
from ir import dtypes
from ir.ops.contraction import LinearOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.normalization import SoftmaxOp
from ir.ops.reduction import ReduceOp
from ir.ops.sources import ParamOp
from passes import PipelineError, parse_pipeline, run_pipeline
from passes.fusion import decide
from passes.fusion_graph import FusionGraph
from passes.fusion_groups import FusionRules, enumerate_candidates, is_valid
from passes.fusion_recompute import recomputable

WIDTH = 16


def random_program(choices: list[tuple[int, int, int]]) -> ir.Program:
    """A small DAG: each step picks an op kind and operands among earlier values."""
    x_type = dtypes.tensor_type((4, WIDTH), torch.float32)
    block = Block(arg_types=[x_type])
    values = [block.args[0]]
    params: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(len(choices))
    for kind, a, b in choices:
        lhs, rhs = values[a % len(values)], values[b % len(values)]
        if kind == 0:
            op = UNARY_OPS[("relu", "exp", "tanh")[a % 3]].make(lhs)
        elif kind == 1:
            op = BINARY_OPS[("add", "mul")[b % 2]].make(lhs, rhs)
        elif kind == 2:
            op = SoftmaxOp.make(lhs, dim=-1)
        elif kind == 3:
            reduced = ReduceOp.make(lhs, kind="sum", dims=(1,), keepdim=True)
            block.add_op(reduced)
            op = BINARY_OPS["sub"].make(lhs, reduced)
        else:
            name = f"w{len(params)}"
            params[name] = torch.randn(WIDTH, WIDTH, generator=gen) / WIDTH
            weight = ParamOp.of(name, dtypes.tensor_type((WIDTH, WIDTH), torch.float32))
            block.add_op(weight)
            op = LinearOp.make(lhs, weight)
        block.add_op(op)
        values.append(op.results[0])
    outs = values[-2:] if len(values) > 2 else values[-1:]
    block.add_op(func.ReturnOp(*outs))
    fn = func.FuncOp("forward", ([x_type], [v.type for v in outs]), Region(block))
    return ir.Program(ModuleOp([fn]), params)


programs = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 20), st.integers(0, 20)), min_size=2, max_size=6)
RULES = [FusionRules(max_group=4), FusionRules(max_group=3, fuse_contractions=True, multi_reduction=False)]


def brute_force(graph: FusionGraph, rules: FusionRules, recompute: bool, relax: bool = False) -> float:
    """The cheapest cover by the rules in passes/fusion_recompute.py, by exhaustive search.

    Without recompute every op is covered once (set partitions). Every group of a valid
    cover has an op no other group covers (its sink: rule 3), so branching on a group for
    the lowest uncovered op reaches every cover. Groups are convex, or with `relax` convex
    but for edges out of copies (`fusion_groups.sealed`). For each cover, each value read from
    memory or returned gets one writer among the groups holding its producer, all ways;
    groups that cannot be ordered (a cycle) are not a schedule.
    """
    n = len(graph)
    rec = [recompute and recomputable(graph, i) for i in range(n)]
    producer = {v: i for i in range(n) for v in graph.writes[i]}
    groups = [  # a recomputed copy feeds only its own group: convex but for its edges out
        frozenset(c) for k in range(1, rules.max_group + 1) for c in itertools.combinations(range(n), k)
        if _connected(graph, frozenset(c)) and is_valid(graph, frozenset(c), rules, rec if relax else None)
    ]

    def cost(cover: list[frozenset[int]]) -> float:
        count = Counter(i for g in cover for i in g)
        if any(count[i] > 1 and not graph.succs[i] & g for g in cover for i in g):
            return math.inf  # rule 3: every copy of a recomputed op is read in its group
        reads = [{v for i in g for v in graph.reads[i] if v in producer and producer[v] not in g} for g in cover]
        needed = sorted(set().union(*reads) | {v for v in graph.returned if v in producer})
        best = math.inf
        for pick in itertools.product(*[[k for k, g in enumerate(cover) if producer[v] in g] for v in needed]):
            writer = dict(zip(needed, pick))
            try:
                tuple(graphlib.TopologicalSorter({k: {writer[v] for v in r} for k, r in enumerate(reads)}).static_order())
            except graphlib.CycleError:
                continue
            written = Counter()
            for v, k in writer.items():
                written[k] += graph.value_bytes[v]
            flops = [sum(graph.flops[i] for i in g) for g in cover]
            best = min(best, sum(roofline_seconds(flops[k], graph.bytes_read(g) + written[k], graph.hw)
                                 for k, g in enumerate(cover)))
        return best

    floor = {g: roofline_seconds(sum(graph.flops[i] for i in g), graph.bytes_read(g), graph.hw) for g in groups}
    best = math.inf

    def search(cover: list[int], count: list[int], first: dict[int, int], bound: float) -> None:
        """`first[i]`: the group taken for op i when it was the lowest uncovered one; a later
        group holding i must come after it in `groups`, so each cover is reached once."""
        nonlocal best
        if bound >= best:  # a group costs at least its reads: this branch cannot win
            return
        i = next((i for i in range(n) if count[i] == 0), None)
        if i is None:
            best = min(best, cost([groups[k] for k in cover]))
            return
        for k, g in enumerate(groups):
            if i not in g or any(count[j] and (not rec[j] or first.get(j, -1) >= k or not graph.succs[j] & g) for j in g):
                continue
            search(cover + [k], [c + (j in g) for j, c in enumerate(count)], {**first, i: k}, bound + floor[g])

    search([], [0] * n, {}, 0.0)
    return best


def _connected(graph: FusionGraph, group: frozenset[int]) -> bool:
    start = next(iter(group))
    seen, frontier = {start}, [start]
    while frontier:
        for n in graph.neighbors(frontier.pop()):
            if n in group and n not in seen:
                seen.add(n)
                frontier.append(n)
    return seen == set(group)


MODES = [(False, False), (True, False), (True, True)]  # (recompute, relax-convexity)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.sampled_from(RULES), st.sampled_from(MODES))
def test_ilp_matches_brute_force_and_beats_greedy(choices, rules, mode):
    recompute, relax = mode
    program = random_program(choices)
    graph = FusionGraph.build(program.forward, get_hardware("cpu"))
    decision = decide(graph, rules, "ilp", time_limit=10.0, recompute=recompute, relax_convexity=relax)
    s = decision.summary
    assert s["status"] == "optimal"
    assert s["time_us_ilp"] == pytest.approx(brute_force(graph, rules, recompute, relax) * 1e6, rel=1e-9)
    assert s["time_us_ilp"] <= s["time_us_greedy"] * (1 + 1e-12)
    covered = sorted(i for g in decision.groups for i in g)
    if recompute:
        assert s["time_us_ilp"] <= s["time_us_no_recompute"] * (1 + 1e-12)
        assert len(covered) == len(graph) + s["recomputed"]
    else:
        assert covered == list(range(len(graph)))  # a partition: every op exactly once


@settings(max_examples=25, deadline=None)
@given(programs, st.sampled_from(["fuse{max-group=4}", "fuse{max-group=3 multi-reduction=false}",
                                  "fuse{max-group=4 recompute=false}", "fuse{max-group=4 relax-convexity=true}"]))
def test_fusion_preserves_results_and_groups_run_in_order(choices, spec):
    """Interpreter-exact results; after recompute's clones every op has one group, groups are
    convex and orderable, and the rewritten IR costs exactly what the solver said."""
    program = random_program(choices)
    x = torch.randn(4, WIDTH)
    before = ir.run(program, x)
    run_pipeline(program.module, spec, verify=True)
    after = ir.run(program, x)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    graph = FusionGraph.build(program.forward, get_hardware("cpu"))
    groups: dict[int, set[int]] = {}
    for i, op in enumerate(graph.ops):
        groups.setdefault(op.attributes["group"].value.data, set()).add(i)
    assert sorted(groups) == list(range(len(groups)))
    assert all(graph.is_convex(frozenset(g)) for g in groups.values())
    group_of = {i: gid for gid, g in groups.items() for i in g}
    order = {gid: {group_of[p] for i in g for p in graph.preds[i]} - {gid} for gid, g in groups.items()}
    tuple(graphlib.TopologicalSorter(order).static_order())  # raises CycleError if they cannot be ordered
    summary = module_decisions(program.module)["fusion"]
    assert summary.get("recomputed", 0) == len(graph) - summary["ops"]
    total = sum(graph.cost(frozenset(g)) for g in groups.values()) * 1e6
    assert total == pytest.approx(summary["time_us_ilp"], rel=1e-9)


def test_enumeration_finds_every_valid_connected_group():
    program = random_program([(0, 0, 0), (1, 1, 0), (0, 2, 2), (1, 3, 1), (2, 4, 4)])
    graph = FusionGraph.build(program.forward, get_hardware("cpu"))
    rules = FusionRules(max_group=5)
    found = set(enumerate_candidates(graph, rules))
    expected = {
        frozenset(c) for k in range(1, 6) for c in itertools.combinations(range(len(graph)), k)
        if _connected(graph, frozenset(c)) and is_valid(graph, frozenset(c), rules)
    }
    assert found == expected


@pytest.mark.parametrize(
    "spec, words",
    [
        ("fuse{max-group=0}", ["max-group", ">= 1"]),
        ("fuse{solver=magic}", ["solver", "magic"]),
        ("fuse{time-limit=-1}", ["time-limit"]),
        ("fuse{max-grup=3}", ["max-grup"]),
    ],
)
def test_bad_options_are_clear_errors(spec, words):
    with pytest.raises(PipelineError) as err:
        parse_pipeline(spec)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words)


def test_report_is_written_on_the_module():
    program = random_program([(4, 0, 0), (0, 1, 1), (1, 2, 0), (2, 3, 3)])
    run_pipeline(program.module, "fuse{solver=ilp}")
    summary = program.module.attributes["kiln.fusion"].data
    for key in ("status", "objective_us", "kernels_none", "kernels_greedy", "kernels_ilp",
                "bytes_none", "bytes_greedy", "bytes_ilp", "solve_seconds", "chosen",
                "objective_us_no_recompute", "objective_us_recompute", "recomputed"):
        assert key in summary, key
    assert summary["kernels_ilp"].value.data < summary["kernels_none"].value.data


def test_recompute_off_is_set_partitioning():
    """`recompute=false` never clones, and recompute only ever lowers the objective."""
    choices = [(3, 12, 18), (2, 20, 3), (1, 1, 2), (1, 9, 2), (0, 13, 6), (1, 3, 0)]
    objective = {}
    for flag in ("false", "true"):
        program = random_program(choices)
        ops = len(list(program.kiln_ops()))
        run_pipeline(program.module, f"fuse{{max-group=3 multi-reduction=false recompute={flag}}}")
        summary = module_decisions(program.module)["fusion"]
        objective[flag] = summary["objective_us"]
        if flag == "false":
            assert len(list(program.kiln_ops())) == ops and "recomputed" not in summary
    assert objective["true"] <= objective["false"] * (1 + 1e-12)


def test_groups_that_feed_each_other_are_cut():
    """Found by the property test: the cheapest convex groups here form a cycle (each
    group reads a value the other writes); the solver must cut it and still be optimal."""
    choices = [(1, 7, 17), (3, 8, 20), (1, 19, 5), (4, 15, 9), (0, 16, 0), (1, 7, 2)]
    rules = FusionRules(max_group=3, fuse_contractions=True, multi_reduction=False)
    graph = FusionGraph.build(random_program(choices).forward, get_hardware("cpu"))
    for recompute, relax in MODES:
        s = decide(graph, rules, "ilp", time_limit=10.0, recompute=recompute, relax_convexity=relax).summary
        assert s["cuts"] >= 1 and s["status"] == "optimal"
        assert s["time_us_ilp"] == pytest.approx(brute_force(graph, rules, recompute, relax) * 1e6, rel=1e-9)


def test_a_cover_model_too_dense_to_presolve_keeps_the_partition(monkeypatch):
    """Above MAX_COVER_NONZEROS the cover model is not handed to HiGHS (whose presolve of a
    948k-nonzero model ran 25 s past a 9 s limit): the partition stands, the report says so,
    and the answer is the one `recompute=false` gives."""
    from passes import fusion_recompute

    choices = [(3, 12, 18), (2, 20, 3), (1, 1, 2), (1, 9, 2), (0, 13, 6), (1, 3, 0)]
    rules = FusionRules(max_group=3, multi_reduction=False)
    graph = FusionGraph.build(random_program(choices).forward, get_hardware("cpu"))
    plain = decide(graph, rules, "ilp", time_limit=10.0, recompute=False)
    monkeypatch.setattr(fusion_recompute, "MAX_COVER_NONZEROS", 3)
    capped = decide(graph, rules, "ilp", time_limit=10.0, recompute=True)
    status = capped.summary["recompute_status"]
    assert status.startswith("skipped: ") and "nonzeros (> 3)" in status, status
    assert capped.summary["recomputed"] == 0 and capped.home is None
    assert sorted(map(sorted, capped.groups)) == sorted(map(sorted, plain.groups))
