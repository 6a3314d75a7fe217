"""The pipeline pass: the DP equals brute force over every cut, beats the equal split, refuses bad input."""

from __future__ import annotations

import itertools
import random

import pytest
from xdsl.dialects import func

from compiler.driver import module_decisions
from passes import run_pipeline
from passes.pipeline_stages import Layer, PipelineStageError, _solve, _step_time


@pytest.mark.parametrize("seed", range(6))
def test_dp_equals_brute_force_over_all_cuts(seed: int) -> None:
    rng = random.Random(seed)
    n, stages, m = rng.randint(3, 9), rng.randint(2, 4), rng.choice([1, 2, 4, 8])
    stages = min(stages, n)
    layers = [Layer(i, i, rng.uniform(1e-5, 1e-3), 0) for i in range(n)]
    send = [rng.uniform(0, 2e-4) for _ in range(n)]
    cuts, best = _solve(layers, send, stages, m)
    brute = min(_step_time(layers, send, list(c), m) for c in itertools.combinations(range(1, n), stages - 1))
    assert best == pytest.approx(brute, rel=1e-9)
    assert _step_time(layers, send, cuts, m) == pytest.approx(best, rel=1e-9)


@pytest.fixture(scope="module")
def gpt8_text():
    from compiler.capture import convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from compiler.capture.partition import IGNORED
    from examples.zoo import gpt_layers

    model, inputs = gpt_layers(6, batch=8)
    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    return str(convert_nodes(part, plan.consts, users_outside(part, IGNORED)).program.module)


def test_stages_are_contiguous_and_beat_the_equal_split(gpt8_text) -> None:
    import ir

    module = ir.parse_module(gpt8_text)
    run_pipeline(module, "pipeline{stages=4 microbatches=8 mesh=8 cluster=h100-node}")
    s = module_decisions(module)["pipeline"]
    assert s["objective_us"] <= s["equal_split_us"] * (1 + 1e-9)
    assert s["devices_per_stage"] == 2 and len(s["cuts"].split(",")) == 3
    fn = next(o for o in module.ops if isinstance(o, func.FuncOp))
    stages = [o.attributes["kiln.stage"].value.data for o in fn.body.block.ops
              if "kiln.stage" in o.attributes and o.name not in ("kiln.param", "kiln.constant")]
    assert stages == sorted(stages) and set(stages) == {0, 1, 2, 3}


@pytest.mark.parametrize("spec,message", [
    ("pipeline{stages=2 microbatches=3}", "batch 8 is not divisible by 3 microbatches"),
    ("pipeline{stages=3 microbatches=2 mesh=8}", "8 devices do not split into 3 equal stage submeshes"),
    ("pipeline{stages=200 microbatches=2}", "only .* cut points for 200 stages"),
])
def test_bad_input_is_one_line(gpt8_text, spec: str, message: str) -> None:
    import ir

    with pytest.raises(PipelineStageError, match=message) as err:
        run_pipeline(ir.parse_module(gpt8_text), spec)
    assert "\n" not in str(err.value)
