"""The generated Vitis HLS project says what the decisions asked for (FileCheck on C++).

Per-layer ap_fixed weight types come from the quantization pass's `quant` decisions, reuse
factors from the `hls-reuse` pass, the part and clock from the build options; the checks
are derived from those decisions, so they hold for whatever the solvers chose.
"""

from __future__ import annotations

import math

from hls_harness import NEEDS_TOOLS, UNIFORM_PIPELINE, built, filecheck

from ir.attrs import from_attr
from ir.quant import get_format

QUANT = ("fold-constants,kiln-canonicalize,cse,dce,"
         "quantize{formats=fixed6,fixed8,fixed12 avg-bits=9},hls-reuse")
QUANT_WA = ("fold-constants,kiln-canonicalize,cse,dce,"
            "quantize{formats=fixed8,fixed16 avg-bits=12 mode=weight-activation},hls-reuse")

pytestmark = NEEDS_TOOLS


def _read(kernel, rel: str) -> str:
    return (kernel.artifacts["hls_project"] / rel).read_text()


def _macs(program):
    ops = list(program.forward.body.block.ops)
    return [(ops.index(op), op) for op in ops if op.name in ("kiln.linear", "kiln.conv2d")]


def test_weights_have_the_quantization_decisions_types_and_layers_their_pragmas() -> None:
    _, _, program, kernel = built("mlp", QUANT)
    dense = [layer for layer in kernel.graph.layers if layer.kind == "dense"]
    types, layers, weights = [], [], []
    for layer, (index, op) in zip(dense, _macs(program)):
        decision = {k: from_attr(v) for k, v in op.attributes["quant"].data.items()}
        cpp = get_format(str(decision["storage"])).element.cpp_type
        reuse = op.attributes["reuse_factor"].value.data
        shape = layer.weight.codes.shape
        types.append(f"// CHECK: typedef {cpp} {layer.name}_w_t;")
        weights.append(f"// CHECK: static const {layer.name}_w_t {layer.name}_w[{math.prod(shape)}] = {{")
        layers += [
            f"// CHECK: // {layer.name}: kiln.linear (op {index}): {shape[1]} -> {shape[0]} on 1 row(s); reuse factor {reuse}",
            f"// CHECK-NEXT: void {layer.name}(",
            "// CHECK-NEXT: #pragma HLS INLINE off",
            "// CHECK: #pragma HLS ARRAY_PARTITION variable=x complete",
            f"// CHECK: #pragma HLS ARRAY_PARTITION variable={layer.name}_w block factor={math.prod(shape) // reuse}",
            f"// CHECK: Reuse: for (int r = 0; r < {reuse}; r++) {{",
            "// CHECK-NEXT: #pragma HLS PIPELINE II=1",
            "// CHECK: #pragma HLS UNROLL",
        ]
    assert {str(from_attr(op.attributes["quant"].data["format"])) for _, op in _macs(program)} <= {"fixed6", "fixed8", "fixed12"}
    filecheck(_read(kernel, "firmware/kiln_types.h"), "\n".join(types))
    filecheck(_read(kernel, "firmware/kiln_weights.h"), "\n".join(weights))
    filecheck(_read(kernel, "firmware/kiln_layers.h"), "\n".join(layers))


def test_the_top_function_has_interfaces_and_calls_every_layer_in_order() -> None:
    _, _, _, kernel = built("cnn", UNIFORM_PIPELINE)
    calls = [f"// CHECK: {layer.name}(" for layer in kernel.graph.layers]
    filecheck(_read(kernel, "firmware/kiln_top.cpp"), "\n".join([
        "// CHECK: void kiln_top(const in0_t in0[3072], l11_out_t out0[10]) {",
        "// CHECK-NEXT: #pragma HLS INTERFACE ap_memory port=in0",
        "// CHECK-NEXT: #pragma HLS ARRAY_RESHAPE variable=out0 complete dim=0",
        "// CHECK-NEXT: #pragma HLS INTERFACE ap_vld port=out0",
        "// CHECK-NEXT: #pragma HLS INTERFACE ap_ctrl_hs port=return", *calls]))
    filecheck(_read(kernel, "firmware/kiln_layers.h"), "\n".join([
        "// CHECK: // l0: kiln.conv2d (op 1): 3x32x32 -> 32x32x32, kernel 3x3",
        "// CHECK: patch[q] = (iy >= 0 && iy < 32 && ix >= 0 && ix < 32)",
        "// CHECK: // l2: kiln.pool2d (op 8): max pool 2x2 stride 2x2",
        "// CHECK: // l10: kiln.reduce (op 34): mean over dims [1, 2]",
        "// CHECK: kiln::from_raw<16>(s)",  # 10 fractional bits + log2(64): an exact division
    ]))
    assert "fixed<16,6>" in kernel.report["precision"]  # no decisions: hls4ml's uniform default


def test_activation_formats_become_the_types_of_their_producers() -> None:
    _, _, program, kernel = built("mlp", QUANT_WA)
    quant_ops = [op for op in program.forward.body.block.ops if op.name == "kiln.quantize"]
    first = get_format(str(from_attr(quant_ops[0].properties["format"]))).element.cpp_type
    assert "AP_RND_CONV,AP_SAT" in first
    # The input's only reader was the quantize: the input port itself takes that type.
    filecheck(_read(kernel, "firmware/kiln_types.h"), f"// CHECK: typedef {first} in0_t;")
    assert not [layer for layer in kernel.graph.layers if layer.kind == "cast"]


def test_part_and_clock_reach_the_tcl_script_and_the_reuse_decision() -> None:
    extra = (("part", "xczu9eg-ffvb1156-2-e"), ("clock-ns", "4"))
    _, _, _, kernel = built("encoder_layer", None, extra)
    filecheck(_read(kernel, "run_hls.tcl"), "\n".join([
        "// CHECK: set_top kiln_top", "// CHECK: set_part {xczu9eg-ffvb1156-2-e}",
        "// CHECK-NEXT: create_clock -period 4 -name default", "// CHECK: csim_design",
        "// CHECK-NEXT: csynth_design"]))
    report = kernel.report
    assert report["part"] == "xczu9eg-ffvb1156-2-e" and report["budget_dsp"] == 2520
    assert "hls-reuse reran" in report["notes"]
    assert report["latency_us"] == report["latency_cycles"] * 4 / 1000
