"""`int8_dyn` in the quantize pass, and the ILP's measured latency term (`latency=measured`).

The format's emulation includes the activation's per-row rounding in every mode, so the
pass's error numbers are those of the W8A8 kernel. The latency tests use a fake kernel
timer (what is checked is that the ILP reads the table, the cache and the fallback), and
one slow test measures real kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ir
from ir.attrs import from_attr
from ir.quant import get_format
from passes import PipelineError, parse_pipeline, run_pipeline
from passes.quant_apply import act_plan
from passes.quant_decide import decide, write_profile
from passes.quant_latency import LatencyTable, problems
from passes.quant_layers import find_layers
from passes.quantization import QuantizeOptions, quantize_program

sys.path.insert(0, str(Path(__file__).parent))
from test_quantization import small_program


def test_int8_dyn_quantizes_activations_per_row_in_every_mode():
    assert act_plan("int8_dyn", "weight-only", None) == ("int8", None)
    assert act_plan("int8_dyn", "weight-activation", 3.0) == ("int8", None)  # dynamic, never static
    assert act_plan("int8", "weight-only", None) == (None, None)


def test_quantize_program_emulates_the_activation_rounding():
    program, inputs = small_program()
    (ref,) = ir.run(program, *inputs)
    report = quantize_program(program, inputs, QuantizeOptions(formats=("int8_dyn",), avg_bits=9.0, compare=False))
    assert report.exact and report.materialized == 4
    text = program.text()
    # the convolution runs its int8 weights weight-only (the int8 kernel takes linears and
    # x @ W): three activation quantize pairs, four weight dequantizes
    assert text.count('"kiln.quantize"') == 3 and text.count('"kiln.dequantize"(') == 7
    summary = program.module.attributes["kiln.quantization"].data
    assert summary["formats"].data == "int8:1,int8_dyn:3" and summary["baseline_uniform"].data == "int8_dyn"
    (out,) = ir.run(program, *inputs)
    assert float((out - ref).norm() / ref.norm()) == pytest.approx(report.error, rel=1e-5)  # fp32 sums in another order
    # the error is the W8A8 one: the same weights in weight-only int8 err less
    program8, _ = small_program()
    report8 = quantize_program(program8, inputs, QuantizeOptions(formats=("int8",), avg_bits=9.0, compare=False))
    assert report8.error < report.error < 0.05


def test_int8_dyn_emulation_is_the_int8_sum():
    """linear(fake_x, fake_w) is the integer dot product times sa * sw, up to fp32 rounding."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 37, generator=g), torch.randn(9, 37, generator=g)
    qa, qw = get_format("int8").quantize(x), get_format("int8_dyn").quantize(w)
    dec = get_format("int8").element.decode
    exact = (dec(qa.codes).double() @ dec(qw.codes).double().t()) * qa.scales.double() * qw.scales.double().t()
    fake = get_format("int8").fake_quantize(x) @ get_format("int8_dyn").fake_quantize(w).t()
    assert torch.allclose(fake.double(), exact, rtol=1e-5, atol=1e-6)


def fake_table(tmp_path: Path, times: dict[str, float]):
    calls = []

    def measure(fmt, m, k, n, threads):
        calls.append((fmt, m, k, n))
        return None if fmt not in times else (times[fmt] * m * k * n, "fake")

    return LatencyTable(folder=tmp_path, measure=measure, host="testhost"), calls


def test_measured_latency_is_read_by_the_ilp_and_cached(tmp_path):
    program, _ = small_program()
    layers, _ = find_layers(program.forward)
    formats = ["int8", "int8_dyn", "fixed8"]
    table, calls = fake_table(tmp_path, {"int8": 4e-12, "int8_dyn": 1e-12})
    d = decide(layers, formats, 10**9, "weight-only", "ilp", 10.0, latency_source="measured", latency_table=table)
    for l, layer in enumerate(layers):
        shapes = problems(layer)
        if layer.kind == "conv2d":
            assert shapes is None  # no TIR kernel: modeled, and counted as such
            continue
        (m, k, n), = shapes
        assert d.problem.latency[l][0] == pytest.approx(4e-12 * m * k * n)
        assert d.problem.latency[l][1] == pytest.approx(1e-12 * m * k * n)
    assert d.summary["latency_source"] == "measured"
    assert d.summary["latency_modeled_entries"] == 3 + 3  # conv in every format, fixed8 everywhere else
    assert table.path.exists() and len(calls) == 9  # 3 linear layers x 3 formats, "no kernel" cached too
    again, calls2 = fake_table(tmp_path, {})
    d2 = decide(layers, formats, 10**9, "weight-only", "ilp", 10.0, latency_source="measured", latency_table=again)
    assert calls2 == [] and d2.problem.latency == d.problem.latency  # every kernel from the cache


def test_a_latency_budget_on_measured_times_picks_the_fast_format(tmp_path):
    program, _ = small_program()
    layers, _ = find_layers(program.forward)
    for layer in layers:
        write_profile(layer, "measured-mse", {"int8": 1e-6, "int8_dyn": 1e-4}, 0.5, None)
    table, _ = fake_table(tmp_path, {"int8": 4e-12, "int8_dyn": 1e-12})
    free = decide(layers, ["int8", "int8_dyn"], 10**9, "weight-only", "ilp", 10.0,
                  latency_source="measured", latency_table=table)
    assert set(free.formats()) == {"int8"}
    fast = sum(min(t) for t in free.problem.latency) * 1e6 * 1.0001
    tight = decide(layers, ["int8", "int8_dyn"], 10**9, "weight-only", "ilp", 10.0, latency_budget_us=fast,
                   latency_source="measured", latency_table=table)
    chosen = dict(zip(tight.problem.layers, tight.formats()))
    assert {f for w, f in chosen.items() if w != "conv"} == {"int8_dyn"}
    assert tight.summary["status"] == "optimal" and tight.summary["latency_us"] <= fast


def test_latency_option_parses_and_rejects_bad_values():
    parse_pipeline("quantize{formats=int8,int8_dyn latency=measured}")
    with pytest.raises(PipelineError, match="latency must be one of modeled, measured"):
        parse_pipeline("quantize{latency=guessed}")


def test_modeled_stays_the_default():
    program, _ = small_program()
    run_pipeline(program.module, "quantize{avg-bits=9 formats=int8,int8_dyn}")
    summary = {k: from_attr(v) for k, v in program.module.attributes["kiln.quantization"].data.items()}
    assert summary["latency_source"] == "modeled"


@pytest.mark.slow
def test_real_kernels_are_measured_once(tmp_path):
    program, _ = small_program()
    layers, _ = find_layers(program.forward)
    table = LatencyTable(folder=tmp_path)
    d = decide(layers, ["int8", "int8_dyn"], 10**9, "weight-only", "ilp", 10.0,
               latency_source="measured", latency_table=table)
    assert table.measured == 6 and d.summary["latency_modeled_entries"] == 2
    assert all(t > 0 for row in d.problem.latency for t in row)
    assert LatencyTable(folder=tmp_path).entries == table.entries


@pytest.mark.slow
def test_compile_pipeline_with_measured_latency_and_a_budget(tmp_path, monkeypatch):
    """Through the compile driver's quantize step: measured kernels, a latency budget at
    the fastest assignment, and the summary saying where the latency came from."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "backends" / "tvm"))
    import test_quantized as tq

    from compiler.calibration import run_pipeline_quantized
    from ir.program import Program

    monkeypatch.setenv("KILN_QUANT_LATENCY_DIR", str(tmp_path))
    fp32, inputs = tq.captured("mlp")
    program = Program(fp32.module.clone(), dict(fp32.params))
    probe = Program(fp32.module.clone(), dict(fp32.params))
    layers, _ = find_layers(probe.forward)
    fastest = decide(layers, ["int8", "int8_dyn"], 10**9, "weight-only", "greedy", 10.0, latency_source="measured")
    budget = sum(min(t) for t in fastest.problem.latency) * 1e6 * 1.05
    run_pipeline_quantized(program, f"quantize{{formats=int8,int8_dyn latency=measured avg-bits=9 "
                                    f"latency-budget-us={budget}}}", inputs,
                           options=QuantizeOptions(compare=False, sensitivity="proxy"))
    summary = {k: from_attr(v) for k, v in program.module.attributes["kiln.quantization"].data.items()}
    assert summary["latency_source"] == "measured" and summary["latency_kernels_measured"] == 0  # all cached
    assert summary["latency_us"] <= budget
