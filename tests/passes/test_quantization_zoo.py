"""Quantization on the zoo: per-format output error, and the ILP against uniform formats.

The error is the relative L2 error of the model's outputs against fp32, on the zoo's
example inputs. The numbers these tests pin down are reported in
`benchmarks/quant_report.py`'s tables.
"""

from __future__ import annotations

import math

import pytest
import torch

import ir
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from examples.zoo import ZOO
from passes.quant_apply import LayerQuant, QuantRunner, act_plan, output_error
from passes.quant_layers import find_layers
from passes.quantization import QuantizeOptions, quantize_program


def capture(name: str):
    model, inputs = ZOO[name]()
    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    return convert_nodes(part, plan.consts, users_outside(part)).program, inputs


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny ops: one thread is faster, and steadier on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def zoo():
    return {name: capture(name) for name in ("mlp", "gpt")}


def uniform_error(program, inputs, fmt: str, mode: str = "weight-only") -> float:
    layers, _ = find_layers(program.forward)
    runner = QuantRunner(program, layers)
    ref, _ = runner.trace(inputs)
    plans = {}
    for layer in layers:
        act, scale = act_plan(fmt, mode, None, "")
        plans[layer.weight] = LayerQuant(fmt, fmt, act, scale)
    return math.sqrt(output_error([ref], [runner.run(inputs, plans)]))


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_int8_keeps_the_output_error_under_one_percent(zoo, model):
    program, inputs = zoo[model]
    assert uniform_error(program, inputs, "int8") < 0.01
    assert uniform_error(program, inputs, "mxint8") < 0.01


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_mxfp8_error_is_the_e4m3_rounding_error(zoo, model):
    """MXFP8 (E4M3 elements) does NOT reach 1%: three mantissa bits leave a ~2.7% relative
    error on every weight (measured 2.7% on one mlp layer), and the error compounds through
    the layers (5.8% on mlp, 5.5% on gpt, against 0.5% for int8). It stays within what E4M3
    allows, and MXFP8 E5M2 (two mantissa bits) is worse."""
    program, inputs = zoo[model]
    e4m3 = uniform_error(program, inputs, "mxfp8_e4m3")
    assert 0.01 < e4m3 < 0.08
    assert uniform_error(program, inputs, "mxfp8_e5m2") > e4m3


def test_ilp_beats_uniform_formats_of_equal_size_on_gpt(zoo):
    program, inputs = zoo["gpt"]
    program = ir.Program(program.module.clone(), dict(program.params))
    formats = ("int8", "int4_g32", "int4_g64", "int4_g128", "mxfp6_e2m3", "mxfp4", "bfp6", "bf16")
    report = quantize_program(program, inputs, QuantizeOptions(formats=formats, avg_bits=6.0))
    assert report.exact and report.bytes <= report.budget_bytes
    smallest = min(u["bytes"] for u in report.uniform)
    largest = max(u["bytes"] for u in report.uniform)
    wins = 0
    for v in report.versus:
        assert v["ilp_bytes"] <= v["budget"]
        # measured, not predicted: never worse than the best uniform format that fits
        assert v["ilp_error"] <= v["best_uniform_error"] * (1 + 1e-6), v
        if smallest < v["budget"] < largest:
            wins += v["ilp_wins"]
    inner = [v for v in report.versus if smallest < v["budget"] < largest]
    # strictly lower at every budget between the extremes except int8's size, where the
    # ILP's best choice is uniform int8 itself (measured; see the benchmark table)
    assert wins >= len(inner) - 1
    assert report.error < min(u["error"] for u in report.uniform if u["bytes"] <= report.budget_bytes)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["encoder", "cnn", "moe"])
def test_quantize_program_on_the_rest_of_the_zoo(model):
    program, inputs = capture(model)
    report = quantize_program(program, inputs, QuantizeOptions(avg_bits=6.0))
    assert report.exact and report.bytes <= report.budget_bytes
    assert uniform_error(*capture(model), "int8") < 0.05


# gpt takes ~30 s on a slow 2-core host (a sensitivity run per layer and format); mlp covers
# the mode in the default run.
@pytest.mark.parametrize("model", ["mlp", pytest.param("gpt", marks=pytest.mark.slow)])
def test_weight_activation_mode_on_the_zoo(model):
    program, inputs = capture(model)
    report = quantize_program(program, inputs, QuantizeOptions(mode="weight-activation", metric="mse"))
    assert report.exact
    for v in report.versus:
        assert v["ilp_bytes"] <= v["budget"]
    assert report.error < 0.02  # at int8's size
