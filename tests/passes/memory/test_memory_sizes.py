"""Tier sizes are the stored element's bytes: ap_fixed widths on an FPGA, dtype or packed
quantized bytes on a GPU; never the IR's fp32 bytes by default."""

from __future__ import annotations

import math

from compiler.driver import module_decisions
from ir import parse_module
from ir.program import entry_function
from ir.quant import get_format
from passes import run_pipeline
from passes.memory.fpga_arrays import hls_arrays
from passes.memory.sizes import FPGA_DEFAULT_BITS, stored_bytes

MLP = """builtin.module {
  func.func @forward(%x: tensor<4x64xf32>) -> tensor<4x10xf32> {
    %w1 = "kiln.param"() <{name = "w1"}> : () -> tensor<256x64xf32>
    %w2 = "kiln.param"() <{name = "w2"}> : () -> tensor<10x256xf32>
    %h = "kiln.linear"(%x, %w1) {quant = {format = "%FMT%"}} : (tensor<4x64xf32>, tensor<256x64xf32>) -> tensor<4x256xf32>
    %g = "kiln.gelu"(%h) : (tensor<4x256xf32>) -> tensor<4x256xf32>
    %y = "kiln.linear"(%g, %w2) : (tensor<4x256xf32>, tensor<10x256xf32>) -> tensor<4x10xf32>
    func.return %y : tensor<4x10xf32>
  }
}"""

HALF = """builtin.module {
  func.func @forward(%x: tensor<4x64xf16>) -> tensor<4x32xf16> {
    %w = "kiln.param"() <{name = "w"}> : () -> tensor<32x64xf16>
    %h = "kiln.linear"(%x, %w) : (tensor<4x64xf16>, tensor<32x64xf16>) -> tensor<4x32xf16>
    func.return %h : tensor<4x32xf16>
  }
}"""


def _params(module) -> dict[str, object]:
    fn = entry_function(module)
    return {op.properties["name"].data: op.results[0] for op in fn.body.block.ops if op.name == "kiln.param"}


def test_fpga_bytes_follow_the_fixed_point_widths():
    module = parse_module(MLP.replace("%FMT%", "fixed8"))
    p = _params(module)
    assert stored_bytes(p["w1"], "fpga", True) == 256 * 64 * 8 // 8  # the decision's 8-bit codes
    assert stored_bytes(p["w2"], "fpga", True) == 10 * 256 * FPGA_DEFAULT_BITS // 8  # HLS default
    arrays = {a.name: a for a in hls_arrays(entry_function(module))}
    assert arrays["w1"].nbytes == 256 * 64 and arrays["w2"].nbytes == 10 * 256 * 2
    assert arrays["linear"].nbytes == 256 * 2 and not arrays["linear"].weight  # one sample per call
    assert "forward" not in arrays and len(arrays) == 4  # w1, w2, h, g; the output is a port
    run_pipeline(module, "map-memory{tiers=fpga part=xc7z020clg400-1}")
    memory = module_decisions(module)["memory"]
    blocks = sum(-(-a.nbytes // 2304) for a in arrays.values())  # all fit: 8 + 3 + 1 + 1
    assert memory["tier_bram_used"] == blocks == 13
    assert memory["tier_bram_used"] < -(-math.prod((256, 64)) * 4 // 2304)  # fp32 w1 alone: 29 blocks


def test_gpu_bytes_are_dtype_or_packed_codes():
    module = parse_module(MLP.replace("%FMT%", "int8"))
    p = _params(module)
    assert stored_bytes(p["w1"], "gpu", True) == get_format("int8").nbytes(256, 64) < 256 * 64 * 4
    assert stored_bytes(p["w2"], "gpu", True) == 10 * 256 * 4  # fp32, no decision
    half = parse_module(HALF)
    assert stored_bytes(_params(half)["w"], "gpu", True) == 32 * 64 * 2
    run_pipeline(half, "map-memory{tiers=gpu part=h100}")
    assert module_decisions(half)["memory"]["tier_device_used"] == 32 * 64 * 2


def test_the_tier_plan_changes_with_the_element_width():
    """The same model on the same part: 16-bit weights spill to DDR where 4-bit ones fit."""
    used = {}
    for fmt in ("fixed16", "fixed4"):
        text = MLP.replace("%FMT%", fmt).replace("256x64", "2048x64").replace("4x256", "4x2048")
        text = text.replace("10x256", "10x2048").replace("kiln.gelu", "kiln.relu")  # no GELU table
        module = parse_module(text)
        run_pipeline(module, "map-memory{tiers=fpga part=xc7z020clg400-1}")
        used[fmt] = module_decisions(module)["memory"]
    assert used["fixed4"]["tier_bram_used"] < used["fixed16"]["tier_bram_used"]
