"""map-memory's tiers in the HLS project: bind_storage pragmas, C simulation still bit-exact.

The zoo's mlp (about 1.4 MB of fp32 weights, 16-bit codes in the design) does not fit the
Zynq 7020's 280 BRAMs; with `map-memory{tiers=fpga part=xc7z020clg400-1}` the tier plan
fits the part, the generated top function binds each on-chip array to its memory, and the
design still matches the emulation bit for bit.
"""

from __future__ import annotations

import torch
from hls_harness import NEEDS_TOOLS, built

from backends import get_backend
from compiler.driver import module_decisions

pytestmark = NEEDS_TOOLS

SMALL_PART = "xc7z020clg400-1"


def test_tiers_appear_in_the_project_and_csim_stays_bit_exact():
    pipeline = f"{get_backend('hls').pipeline()},map-memory{{tiers=fpga part={SMALL_PART}}}"
    _, inputs, program, kernel = built("mlp", pipeline)
    memory = module_decisions(program.module)["memory"]
    assert memory["tier_bram_used"] <= memory["tier_bram_capacity"] == 280
    assert memory["tier_ddr_used"] > 0  # the weights do not all fit on chip
    top = kernel.artifacts["kiln_top.cpp"].read_text()
    assert "#pragma HLS bind_storage variable=" in top and "impl=bram" in top
    assert "DDR (map-memory)" in top
    got = kernel.library.run(list(inputs))
    want = kernel.emulate(*inputs)
    for y, e in zip(got, want):
        assert torch.equal(y, e.reshape(y.shape))
