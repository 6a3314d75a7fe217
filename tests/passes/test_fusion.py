"""The fuse pass: the ILP is exact (matches brute force), never worse than greedy, and safe."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

import ir
from cost_models.hardware import get_hardware
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


def set_partitions(items: list[int]):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [part[i] | {first}] + part[i + 1:]
        yield [frozenset([first])] + part


def brute_force(graph: FusionGraph, rules: FusionRules) -> float:
    best = float("inf")
    for partition in set_partitions(list(range(len(graph)))):
        groups = [frozenset(g) for g in partition]
        if all(is_valid(graph, g, rules) and _connected(graph, g) for g in groups):
            best = min(best, sum(graph.cost(g) for g in groups))
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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.sampled_from(RULES))
def test_ilp_matches_brute_force_and_beats_greedy(choices, rules):
    program = random_program(choices)
    graph = FusionGraph.build(program.forward, get_hardware("cpu"))
    decision = decide(graph, rules, "ilp", time_limit=10.0)
    s = decision.summary
    assert s["status"] == "optimal"
    assert s["time_us_ilp"] == pytest.approx(brute_force(graph, rules) * 1e6, rel=1e-9)
    assert s["time_us_ilp"] <= s["time_us_greedy"] * (1 + 1e-12)
    covered = sorted(i for g in decision.groups for i in g)
    assert covered == list(range(len(graph)))  # a partition: every op exactly once


@settings(max_examples=25, deadline=None)
@given(programs)
def test_fusion_preserves_results_and_groups_are_convex(choices):
    program = random_program(choices)
    x = torch.randn(4, WIDTH)
    before = ir.run(program, x)
    run_pipeline(program.module, "fuse{max-group=4}", verify=True)
    after = ir.run(program, x)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    graph = FusionGraph.build(program.forward, get_hardware("cpu"))
    groups: dict[int, set[int]] = {}
    for i, op in enumerate(graph.ops):
        groups.setdefault(op.attributes["group"].value.data, set()).add(i)
    assert sorted(groups) == list(range(len(groups)))
    assert all(graph.is_convex(frozenset(g)) for g in groups.values())


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
                "bytes_none", "bytes_greedy", "bytes_ilp", "solve_seconds", "chosen"):
        assert key in summary, key
    assert summary["kernels_ilp"].value.data < summary["kernels_none"].value.data
