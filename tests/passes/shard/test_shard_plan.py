"""The shard pass: the ILP never loses to a baseline, equals brute force, and refuses bad input."""

from __future__ import annotations

import itertools
import math
import random

import pytest

import ir
from compiler.driver import module_decisions
from cost_models.comm import get_cluster
from ir.program import entry_function
from passes import PipelineError, run_pipeline
from passes.shard import ShardError, plan_function
from passes.shard.baselines import BASELINES
from passes.shard.cost import CostTables, evaluate
from passes.shard.graph import build_graph
from passes.shard.placement import fits, parse


def chain_text(batch: int, dims: list[int], acts: list[str], bias: bool = False) -> str:
    """x -> linear -> act -> linear -> ... as kiln IR text (weights are params)."""
    lines, v = [], 0
    n = 0
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        n += 1
        lines.append(f'    %{n} = "kiln.param"() <{{name = "w{i}"}}> : () -> tensor<{b}x{a}xf32>')
        w = n
        args = f"%{v}, %{w}"
        types = f"tensor<{batch}x{a}xf32>, tensor<{b}x{a}xf32>"
        if bias:
            n += 1
            lines.append(f'    %{n} = "kiln.param"() <{{name = "b{i}"}}> : () -> tensor<{b}xf32>')
            args += f", %{n}"
            types += f", tensor<{b}xf32>"
        n += 1
        lines.append(f'    %{n} = "kiln.linear"({args}) : ({types}) -> tensor<{batch}x{b}xf32>')
        v = n
        if i < len(acts):
            n += 1
            lines.append(f'    %{n} = "kiln.{acts[i]}"(%{v}) : (tensor<{batch}x{b}xf32>) -> tensor<{batch}x{b}xf32>')
            v = n
    body = "\n".join(lines)
    return (f"builtin.module {{\n  func.func @forward(%0: tensor<{batch}x{dims[0]}xf32>) -> tensor<{batch}x{dims[-1]}xf32> {{\n"
            f"{body}\n    func.return %{v} : tensor<{batch}x{dims[-1]}xf32>\n  }}\n}}")


@pytest.mark.parametrize("seed", range(5))
def test_ilp_equals_brute_force_on_random_chains(seed: int) -> None:
    rng = random.Random(seed)
    cluster = rng.choice(["gloo", "a100-node", "h100-node"])
    while True:  # a random chain small enough to enumerate every plan
        depth = rng.choice([2, 3])
        dims = [rng.choice([64, 256, 1024, 4096]) for _ in range(depth)] + [rng.choice([10, 64])]
        module = ir.parse_module(chain_text(rng.choice([2, 8, 64]), dims, ["relu", "gelu"][: depth - 1]))
        graph = build_graph(entry_function(module), (2,), tie=False)
        sizes = [len(graph.strategies(k)) for k in range(len(graph.classes))]
        if 1 < math.prod(sizes) < 30_000:
            break
    c = get_cluster(cluster)
    tables = CostTables(graph, c.device, c)
    _, plan = plan_function(module, (2,), "ilp", None, 10.0, cluster, tie=False)
    best = min(evaluate(tables, list(ch))["time_us"] for ch in itertools.product(*[range(s) for s in sizes]))
    assert plan.summary["time_us"] == pytest.approx(best, rel=1e-4)


@pytest.fixture(scope="module")
def zoo_modules():
    from compiler.capture import convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from compiler.capture.partition import IGNORED
    from examples.zoo import encoder, gpt, mlp

    out = {}
    for name, factory in (("mlp", mlp), ("encoder", encoder), ("gpt", gpt)):
        model, inputs = factory()
        plan = plan_partitions(from_model(model, inputs))
        (part,) = plan.partitions()
        out[name] = str(convert_nodes(part, plan.consts, users_outside(part, IGNORED)).program.module)
    return out


@pytest.mark.parametrize("mesh,cluster", [
    ("2", "gloo"), ("2x2", "h100-node"),
    pytest.param("4", "a100-node", marks=pytest.mark.slow),
    pytest.param("2x4", "h100-4node", marks=pytest.mark.slow),
])
def test_ilp_never_above_any_baseline(zoo_modules, mesh: str, cluster: str) -> None:
    for name, text in zoo_modules.items():
        module = ir.parse_module(text)
        run_pipeline(module, f"shard{{mesh={mesh} cluster={cluster}}}")
        s = module_decisions(module)["shard"]
        assert s["status"] in ("optimal", "time_limit")
        for b in BASELINES:
            if f"{b}_time_us" in s:
                assert s["time_us"] <= s[f"{b}_time_us"] * (1 + 1e-4), (name, b, s)
        fn = entry_function(module)
        for op in fn.body.block.ops:  # every placement divides its value's shape
            if "kiln.placement" in op.attributes:
                p = parse(op.attributes["kiln.placement"].data)
                assert fits(p, tuple(op.results[0].type.get_shape()), tuple(int(m) for m in mesh.split("x")))


def test_megatron_shards_attention_and_mlp_weights(zoo_modules) -> None:
    module = ir.parse_module(zoo_modules["gpt"])
    run_pipeline(module, "shard{mesh=2 solver=megatron cluster=a100-node}")
    s = module_decisions(module)["shard"]
    # q, k, v, gate, up column-parallel; out, down row-parallel with one all-reduce each; 4 blocks
    assert "linear w[shard(0)] -> [shard(2)] x20" in s["chosen"]
    assert "linear w[shard(1)] -> [replicate] +all_reduce[0] x8" in s["chosen"]
    assert s["collectives"] == 8  # the replicated head's output needs no gather
    assert s["megatron_memory_mb"] < s["replicate_memory_mb"]


def test_memory_budget_gets_a_plan_where_data_parallel_does_not_fit(zoo_modules) -> None:
    module = ir.parse_module(zoo_modules["gpt"])
    run_pipeline(module, "shard{mesh=4 cluster=h100-node memory-gb=0.012}")
    s = module_decisions(module)["shard"]
    assert s["data-parallel_fits"] == 0 and s["replicate_fits"] == 0
    assert s["memory_mb"] <= 12.0 and s["status"] == "optimal"


def test_memory_budget_nothing_fits_is_one_line(zoo_modules) -> None:
    module = ir.parse_module(zoo_modules["mlp"])
    with pytest.raises(ShardError, match=r"no plan fits .* GB per device on mesh 2"):
        run_pipeline(module, "shard{mesh=2 memory-gb=0.0001}")


def test_indivisible_mesh_falls_back_to_dims_that_divide(zoo_modules) -> None:
    module = ir.parse_module(zoo_modules["mlp"])  # batch 8, widths 256/512/10: nothing divides by 3
    run_pipeline(module, "shard{mesh=3 cluster=h100-node}")
    fn = entry_function(module)
    assert all(op.attributes["kiln.placement"].data == "[replicate]"
               for op in fn.body.block.ops if "kiln.placement" in op.attributes)


@pytest.mark.parametrize("spec,message", [
    ("shard{mesh=2y2}", "mesh must look like"),
    ("shard{solver=alpa}", "unknown solver 'alpa'"),
    ("shard{cluster=tpu}", "unknown cluster 'tpu'"),
    ("shard{memory-gb=-1}", "memory-gb must be > 0"),
])
def test_bad_options_are_one_line(spec: str, message: str) -> None:
    module = ir.parse_module(chain_text(8, [64, 64], []))
    with pytest.raises((ShardError, PipelineError), match=message) as err:
        run_pipeline(module, spec)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_tied_layers_keep_gpt24_small_and_fast() -> None:
    from compiler.capture import convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from compiler.capture.partition import IGNORED
    from examples.zoo import gpt_layers

    model, inputs = gpt_layers(24, batch=8)
    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    module = convert_nodes(part, plan.consts, users_outside(part, IGNORED)).program.module
    run_pipeline(module, "shard{mesh=8 cluster=h100-node}")
    s = module_decisions(module)["shard"]
    assert s["ops"] > 1400 and s["classes"] < 120
    assert s["status"] == "optimal" and s["seconds"] < 10


def test_kiln_opt_prints_the_plan_and_nothing_else(tmp_path) -> None:
    import subprocess
    import sys

    src = tmp_path / "chain.mlir"
    src.write_text(chain_text(4096, [4096, 16384, 4096], ["gelu"]))
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "opt", str(src), "-p",
                           "shard{mesh=2x2 cluster=h100-node memory-gb=0.3}"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = ir.parse_module(proc.stdout)  # stdout is IR only (highspy's stray line kept off it)
    s = module_decisions(out)["shard"]
    assert s["data-parallel_fits"] == 0 and s["memory_mb"] <= 300
    assert 'kiln.placement = "[shard(1), shard(1)]"' in proc.stdout
    assert 'kiln.all_reduce = "0,1"' in proc.stdout
