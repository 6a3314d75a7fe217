"""The quantize pass and quantize_program: the ILP is exact and keeps the budget, the pass
writes its decisions, and quantized programs run bit-exactly on the interpreter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pass_harness import filecheck
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp
from xdsl.ir import Block, Region

import ir
from ir import dtypes
from ir.attrs import from_attr
from ir.ops.contraction import Conv2dOp, LinearOp, MatmulOp
from ir.ops.elementwise import UNARY_OPS
from ir.ops.movement import ReshapeOp
from ir.ops.sources import ParamOp
from ir.quant import get_format
from passes import PipelineError, parse_pipeline, run_pipeline
from passes.quant_decide import write_profile
from passes.quant_layers import find_layers
from passes.quant_solver import Problem, QuantizationError, brute_force, solve_greedy, solve_ilp
from passes.quantization import QuantizeOptions, quantize_program


# ---- the solver --------------------------------------------------------------------------
@st.composite
def problems(draw):
    n_layers = draw(st.integers(1, 5))
    n_formats = draw(st.integers(2, 4))
    nbytes = [[draw(st.integers(1, 500)) for _ in range(n_formats)] for _ in range(n_layers)]
    cost = [[draw(st.floats(0, 1)) * 10.0 ** draw(st.integers(-9, 0)) for _ in range(n_formats)] for _ in range(n_layers)]
    lo, hi = sum(min(b) for b in nbytes), sum(max(b) for b in nbytes)
    budget = draw(st.integers(lo, hi))
    latency = lat_budget = None
    if draw(st.booleans()):
        latency = [[draw(st.floats(0.1, 1.0)) for _ in range(n_formats)] for _ in range(n_layers)]
        lat_budget = sum(min(t) for t in latency) + draw(st.floats(0, 1)) * n_layers * 0.5
    names = [f"l{i}" for i in range(n_layers)]
    return Problem(names, [[f"f{j}" for j in range(n_formats)] for _ in names], cost, nbytes, budget, latency, lat_budget)


@settings(max_examples=150, deadline=None)
@given(problems())
def test_ilp_matches_brute_force(problem):
    try:
        best = brute_force(problem)
    except QuantizationError:
        return  # the latency budget excludes everything; nothing to compare
    ilp = solve_ilp(problem)
    assert problem.feasible(ilp.choice) and problem.bytes_of(ilp.choice) <= problem.budget
    assert ilp.status == "optimal"
    optimum = problem.cost_of(best.choice)
    # exact up to the solver's tolerance: 1e-9 of the objective's scale
    assert problem.cost_of(ilp.choice) <= optimum + 1e-9 * sum(max(c) for c in problem.cost) + 1e-300
    greedy = solve_greedy(problem)
    assert problem.bytes_of(greedy.choice) <= problem.budget
    if problem.feasible(greedy.choice):
        assert problem.cost_of(greedy.choice) >= optimum * (1 - 1e-12)


def test_ilp_beats_greedy_where_greedy_is_myopic():
    # From (a=y, b=x), 15 B, greedy takes b's cheaper-per-byte downgrade (0.4 < 0.5) and
    # lands at cost 3; moving a down instead, to 13 B exactly, costs 2.
    problem = Problem(["a", "b"], [["x", "y"]] * 2, [[2, 1], [0, 2]], [[3, 5], [10, 5]], budget=13)
    assert problem.formats(solve_ilp(problem).choice) == ["x", "x"] == problem.formats(brute_force(problem).choice)
    assert problem.formats(solve_greedy(problem).choice) == ["y", "y"]
    assert problem.cost_of(solve_greedy(problem).choice) == 3


def test_budget_below_the_smallest_assignment_is_an_error():
    problem = Problem(["a"], [["x", "y"]], [[0.0, 1.0]], [[10, 5]], budget=4)
    with pytest.raises(QuantizationError, match="below the smallest assignment .5 bytes"):
        solve_ilp(problem)


# ---- programs for the pass ---------------------------------------------------------------
def small_program(seed: int = 0) -> tuple[ir.Program, tuple[torch.Tensor]]:
    """conv2d -> relu -> reshape -> linear -> gelu -> linear -> matmul with a parameter."""
    g = torch.Generator().manual_seed(seed)
    params = {
        "conv": torch.randn(8, 3, 3, 3, generator=g) / 5,
        "fc1": torch.randn(64, 512, generator=g) / 22, "fc1_b": torch.randn(64, generator=g) / 10,
        "fc2": torch.randn(96, 64, generator=g) / 8,
        "proj": torch.randn(96, 40, generator=g) / 10,
    }
    x_type = dtypes.tensor_type((2, 3, 8, 8), torch.float32)
    block = Block(arg_types=[x_type])
    p = {k: ParamOp.of(k, dtypes.tensor_type(tuple(v.shape), v.dtype)) for k, v in params.items()}
    conv = Conv2dOp.make(block.args[0], p["conv"], None, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    relu = UNARY_OPS["relu"].make(conv)
    flat = ReshapeOp.make(relu, shape=(2, 512))
    fc1 = LinearOp.make(flat, p["fc1"], p["fc1_b"])
    gelu = UNARY_OPS["gelu"].make(fc1)
    fc2 = LinearOp.make(gelu, p["fc2"])
    out = MatmulOp.make(fc2, p["proj"])
    block.add_ops([*p.values(), conv, relu, flat, fc1, gelu, fc2, out, func.ReturnOp(out.result)])
    fn = func.FuncOp("forward", ([x_type], [out.result.type]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return ir.Program(module, params), (torch.randn(2, 3, 8, 8, generator=g),)


def quant_attrs(module: ModuleOp) -> dict[str, dict]:
    out = {}
    for op in module.walk():
        attr = op.attributes.get("quant")
        if isinstance(attr, DictionaryAttr):
            out[from_attr(attr.data["weight"])] = {k: from_attr(v) for k, v in attr.data.items()}
    return out


def test_layers_are_the_parameter_weights_of_contractions():
    program, _ = small_program()
    layers, skipped = find_layers(program.forward)
    assert [(l.weight, l.kind, l.view_shape, l.axis) for l in layers] == [
        ("conv", "conv2d", (8, 27), 1), ("fc1", "linear", (64, 512), 1),
        ("fc2", "linear", (96, 64), 1), ("proj", "matmul", (96, 40), 0),
    ]
    assert skipped == {}


# ---- the pass on IR alone ----------------------------------------------------------------
def test_pass_from_text_uses_the_prior_and_meets_the_budget():
    program, _ = small_program()
    text = program.text()
    module = ir.parse_module(text)
    run_pipeline(module, "quantize{avg-bits=5 formats=int8,int4_g32,mxfp6_e2m3}", verify=True)
    attrs = quant_attrs(module)
    summary = {k: from_attr(v) for k, v in module.attributes["kiln.quantization"].data.items()}
    numel = 8 * 27 + 64 * 512 + 96 * 64 + 96 * 40
    assert summary["sensitivity"] == "prior" and summary["status"] == "optimal"
    assert summary["budget_bytes"] == 5 * numel // 8
    assert summary["bytes"] == sum(a["bytes"] for a in attrs.values()) <= summary["budget_bytes"]
    assert set(attrs) == {"conv", "fc1", "fc2", "proj"}
    assert {a["format"] for a in attrs.values()} <= {"int8", "int4_g32", "mxfp6_e2m3"}
    filecheck(ir.print_module(module), """
// CHECK: kiln.quantization = {solver = "ilp", status = "optimal", mode = "weight-only", sensitivity = "prior"
// CHECK: "kiln.conv2d"{{.*}}quant = {format = "{{[a-z0-9_]+}}", storage = {{.*}}, weight = "conv", axis = 1 : i64, view_shape = array<i64: 8, 27>
// CHECK: "kiln.linear"{{.*}}quant = {format = {{.*}}weight = "fc1"
// CHECK: "kiln.matmul"{{.*}}quant = {{.*}}weight = "proj", axis = 0 : i64
""")
    # the decisions print and parse back
    assert ir.print_module(ir.parse_module(ir.print_module(module))) == ir.print_module(module)


def test_measured_profiles_steer_the_choice():
    program, _ = small_program()
    layers, _ = find_layers(program.forward)
    sensitive = {"int8": 1e-6, "int4_g64": 1.0}
    robust = {"int8": 1e-6, "int4_g64": 1e-5}
    for layer in layers:
        write_profile(layer, "measured-mse", sensitive if layer.weight == "fc2" else robust, 0.5, None)
    total_int4 = sum(l.nbytes("int4_g64") for l in layers)
    budget = total_int4 + layers[2].nbytes("int8") - layers[2].nbytes("int4_g64")
    run_pipeline(program.module, f"quantize{{budget-bytes={budget} formats=int8,int4_g64}}")
    formats = {k: v["format"] for k, v in quant_attrs(program.module).items()}
    assert formats == {"conv": "int4_g64", "fc1": "int4_g64", "fc2": "int8", "proj": "int4_g64"}
    summary = {k: from_attr(v) for k, v in program.module.attributes["kiln.quantization"].data.items()}
    assert summary["sensitivity"] == "measured-mse" and summary["bytes"] == budget


def test_latency_budget_and_greedy_solver():
    program, _ = small_program()
    run_pipeline(program.module, "quantize{avg-bits=16 formats=int8,bf16 latency-budget-us=1}")
    summary = {k: from_attr(v) for k, v in program.module.attributes["kiln.quantization"].data.items()}
    assert summary["latency_us"] <= 1e9 and "latency_budget_us" in summary
    program, _ = small_program()
    run_pipeline(program.module, "quantize{avg-bits=6 solver=greedy formats=int8,int4_g64}")
    summary = {k: from_attr(v) for k, v in program.module.attributes["kiln.quantization"].data.items()}
    assert summary["status"] == "heuristic" and summary["bytes"] <= summary["budget_bytes"]


@pytest.mark.parametrize(("spec", "message"), [
    ("quantize{mode=int8}", "unknown mode 'int8'"),
    ("quantize{solver=cplex}", "unknown solver 'cplex'"),
    ("quantize{formats=int8,int3}", "unknown quantization format 'int3'"),
    ("quantize{avg-bits=-1}", "must be >= 0"),
    ("quantize{budget=3}", "has no option 'budget'"),
])
def test_option_errors_name_the_option(spec, message):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(spec)


def test_a_budget_too_small_names_the_minimum():
    program, _ = small_program()
    with pytest.raises(QuantizationError, match="smallest assignment"):
        run_pipeline(program.module, "quantize{budget-bytes=100 formats=int8}")


# ---- quantize_program: weights in, runnable quantized program out ---------------------
FAST = QuantizeOptions(formats=("int8", "int4_g32", "mxfp6_e2m3", "mxfp4", "bf16"), avg_bits=6.0)


@pytest.mark.parametrize("mode", ["weight-only", "weight-activation"])
def test_quantize_program_materializes_exactly(mode):
    program, inputs = small_program()
    (ref,) = ir.run(program, *inputs)
    weights = {k: v.numel() * 4 for k, v in program.params.items() if k != "fc1_b"}
    report = quantize_program(program, inputs, QuantizeOptions(**{**FAST.__dict__, "mode": mode}))
    assert report.exact and report.materialized == 4
    assert report.bytes <= report.budget_bytes == 6 * sum(weights.values()) // 4 // 8
    # the fp32 weights are gone; the packed codes and scales take exactly the reported bytes
    assert not set(weights) & set(program.params)
    stored = sum(v.numel() * v.element_size() for k, v in program.params.items() if ".q" in k)
    assert stored == report.bytes
    program.module.verify()
    text = program.text()
    assert ir.print_module(ir.parse_module(text)) == text
    assert text.count('"kiln.dequantize"') == (4 if mode == "weight-only" else 8)
    assert text.count('"kiln.quantize"') == (0 if mode == "weight-only" else 4)
    (out,) = ir.run(program, *inputs)
    assert float((out - ref).norm() / ref.norm()) == pytest.approx(report.error, rel=1e-6)
    assert report.error < 0.25


def test_quantize_program_report_compares_greedy_and_uniform():
    program, inputs = small_program()
    report = quantize_program(program, inputs, FAST)
    assert {u["format"] for u in report.uniform} == set(FAST.formats)
    for v in report.versus:
        assert v["ilp_bytes"] <= v["budget"]
        fits = [u for u in report.uniform if u["bytes"] <= v["budget"]]
        assert v["best_uniform_error"] == min(u["error"] for u in fits)
    assert report.greedy_error is not None
    assert "budget = uniform" in report.table() and "fc1" in report.table()
    summary = {k: from_attr(v) for k, v in program.module.attributes["kiln.quantization"].data.items()}
    assert summary["rel_error"] == report.error and summary["sensitivity"] == "measured-mse"


def test_fixed_point_formats_for_hls():
    program, inputs = small_program()
    report = quantize_program(program, inputs, QuantizeOptions(
        formats=("fixed4", "fixed6", "fixed8", "fixed16"), avg_bits=8.0, mode="weight-activation", compare=False))
    assert report.exact
    for row in report.layers:
        fmt = get_format(row["storage"])
        assert fmt.family == "fixed" and row["storage"].startswith("fixed<") and fmt.scale == "none"
        assert row["act_format"].startswith("fixed<16,")


def test_proxy_sensitivity_and_kl_metric():
    program, inputs = small_program()
    report = quantize_program(program, inputs, QuantizeOptions(**{**FAST.__dict__, "sensitivity": "proxy",
                                                                   "compare": False}))
    assert report.sensitivity == "proxy-local-mse" and report.exact
    program, inputs = small_program()
    report = quantize_program(program, inputs, QuantizeOptions(**{**FAST.__dict__, "metric": "kl",
                                                                   "compare": False, "materialize": False}))
    assert report.sensitivity == "measured-kl"
    assert all(r["sensitivity"] >= 0 for r in report.layers)


def test_ilp_objective_is_the_sum_of_chosen_sensitivities():
    program, inputs = small_program()
    report = quantize_program(program, inputs, FAST)
    summary = report.summary
    assert summary["objective"] == pytest.approx(sum(r["sensitivity"] for r in report.layers))
    assert summary["objective"] <= summary["objective_greedy"] * (1 + 1e-9)
    for fmt in FAST.formats:  # every uniform assignment that fits predicts no better
        if summary[f"uniform_{fmt}_bytes"] <= summary["budget_bytes"]:
            assert summary["objective"] <= summary[f"uniform_{fmt}_objective"] * (1 + 1e-9)


def test_a_pipeline_with_quantize_runs_it_with_the_weights():
    from compiler.calibration import run_pipeline_quantized

    program, inputs = small_program()
    timings, report = run_pipeline_quantized(
        program, "fold-constants,kiln-canonicalize,quantize{avg-bits=6 formats=int8,int4_g32,mxfp6_e2m3},cse,dce",
        inputs, options=QuantizeOptions(compare=False))
    assert [t.name for t in timings] == ["fold-constants", "kiln-canonicalize", "quantize", "cse", "dce"]
    assert report is not None and report.exact and report.sensitivity == "measured-mse"
    assert '"kiln.dequantize"' in program.text()
    timings, report = run_pipeline_quantized(small_program()[0], "cse,dce", inputs)
    assert report is None and [t.name for t in timings] == ["cse", "dce"]
