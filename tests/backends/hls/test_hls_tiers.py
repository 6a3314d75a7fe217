"""map-memory's tiers in the HLS project: m_axi ports for DDR weights, bind_storage for the
rest, C simulation bit-exact against the build without tiers, and an estimate that reads them.

The model is a relu MLP (256 -> 512 -> 512 -> 10): its 16-bit weights (about 670 KB) do not
fit the Zynq 7020's 280 BRAM18s (630 KB), and it has no lookup tables, so the memory a tier
plan places is all the BRAM it needs. `map-memory{tiers=fpga part=xc7z020clg400-1}` keeps
some weights on chip and streams the others from DDR.
"""

from __future__ import annotations

import re
import subprocess

import hls_harness
import torch
from hls_harness import NEEDS_TOOLS, built, program_of
from torch import nn

from backends import get_backend
from backends.hls.config import HLSConfig
from backends.hls.lower import lower
from backends.hls.tier_estimate import memory_estimate
from compiler.driver import module_decisions
from ir.program import entry_function

pytestmark = NEEDS_TOOLS

SMALL_PART = "xc7z020clg400-1"
BIGGER_PART = "xczu9eg-ffvb1156-2-e"


def relu_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    return model, (torch.randn(4, 256),)


hls_harness.MODELS["relu_mlp"] = relu_mlp
EXTRA = (("part", SMALL_PART),)


def pipeline(tier_part: str | None) -> str:
    base = get_backend("hls").pipeline().replace("hls-reuse", f"hls-reuse{{part={SMALL_PART}}}")
    return base + (f",map-memory{{tiers=fpga part={tier_part}}}" if tier_part else "")


def _ir_weight_tiers(program) -> list[str]:
    """The tier map-memory gave each linear's weight, read off the IR."""
    out = []
    for op in entry_function(program.module).body.block.ops:
        if op.name == "kiln.linear":
            owner = op.operands[1].owner
            out.append(owner.attributes["memory"].data["tier"].data)
    return out


def test_ddr_weights_are_m_axi_ports_and_csim_matches_the_run_without_tiers():
    _, inputs, program, kernel = built("relu_mlp", pipeline(SMALL_PART), EXTRA)
    _, _, _, plain = built("relu_mlp", pipeline(None), EXTRA)
    ir_tiers = _ir_weight_tiers(program)
    assert "ddr" in ir_tiers and "bram" in ir_tiers, ir_tiers  # some streamed, some on chip
    ddr = sorted(w for w, t in kernel.graph.tiers.items() if t == "ddr" and w.endswith("_w"))
    assert len(ddr) == ir_tiers.count("ddr")
    root = kernel.artifacts["hls_project"]
    top = (root / "firmware" / "kiln_top.cpp").read_text()
    ports = sorted(re.findall(r"#pragma HLS INTERFACE m_axi port=(\w+) offset=slave bundle=gmem\d+", top))
    assert ports == ddr  # exactly the DDR weights (every activation stays on chip here)
    header = (root / "firmware" / "kiln_top.h").read_text()
    weights = (root / "firmware" / "kiln_weights.h").read_text()
    tb = (root / "tb" / "kiln_tb.cpp").read_text()
    for w in ddr:
        assert f"const {w}_t {w}[" in header  # an argument of the top function
        assert f"static const {w}_t {w}[" not in weights  # not a firmware constant any more
        assert f"ddr_{w}" in tb  # the testbench passes the host's copy
    for w, t in kernel.graph.tiers.items():
        if t == "bram":
            assert f"#pragma HLS bind_storage variable={w} type=ram_2p impl=bram" in top
    assert "ddr_" not in (plain.artifacts["hls_project"] / "tb" / "kiln_tb.cpp").read_text()
    assert "m_axi" not in plain.artifacts["kiln_top.cpp"].read_text()
    run = subprocess.run(["sh", str(root / "build_csim.sh")], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0 and "0 mismatching outputs" in run.stdout, run.stdout + run.stderr
    for y, e in zip(kernel.library.run(list(inputs)), plain.library.run(list(inputs))):
        assert torch.equal(y, e)  # bit for bit what the design without tiers computes


def test_the_estimate_reads_the_tiers_and_fits_the_part():
    _, _, program, kernel = built("relu_mlp", pipeline(SMALL_PART), EXTRA)
    _, _, _, plain = built("relu_mlp", pipeline(None), EXTRA)
    tiered, default = kernel.report, plain.report
    memory = module_decisions(program.module)["memory"]
    assert tiered["mem_tiers"] == 1 and default["mem_tiers"] == 0
    assert tiered["bram_18k_total"] <= tiered["part_bram_18k"] == 280 and tiered["fits_part_memory"] == 1
    assert tiered["mem_bram_18k"] == memory["tier_bram_used"]  # the blocks the tier plan placed
    assert tiered["mem_ddr_bytes"] == memory["tier_ddr_used"] > 0
    ddr_bits = sum(c.numel * c.type.width for c in kernel.graph.consts() if kernel.graph.tiers.get(c.name) == "ddr")
    assert tiered["mem_ddr_bytes"] == ddr_bits // 8  # 16-bit codes, not fp32
    assert tiered["ddr_latency_cycles"] > 0
    assert tiered["latency_cycles_with_ddr"] == tiered["latency_cycles"] + tiered["ddr_latency_cycles"]
    assert default["mem_ddr_bytes"] == default["ddr_latency_cycles"] == 0
    assert default["bram_18k_total"] != tiered["bram_18k_total"]


def test_a_different_tier_plan_changes_the_estimate():
    """Tiers planned for a bigger part keep more on chip: fewer DDR bytes, more BRAM."""
    config = HLSConfig(part=SMALL_PART)
    estimates = {}
    for part in (SMALL_PART, BIGGER_PART):
        _, _, program = program_of("relu_mlp", pipeline(part))
        reuse = module_decisions(program.module)["hls_reuse"]
        estimates[part] = memory_estimate(lower(program, config), config, int(reuse["bram_18k"]))
    small, big = estimates[SMALL_PART], estimates[BIGGER_PART]
    assert big["mem_ddr_bytes"] < small["mem_ddr_bytes"] and big["ddr_latency_cycles"] < small["ddr_latency_cycles"]
    assert big["mem_bram_18k"] > small["mem_bram_18k"]
    assert small["fits_part_memory"] == 1 and big["fits_part_memory"] == 0  # planned for 1824 BRAMs


def test_a_ddr_activation_buffer_is_a_scratch_port_and_stays_bit_exact(tmp_path):
    """An activation the plan puts in DDR is an m_axi argument too; the host passes scratch."""
    from backends.hls import csim, emulate
    from backends.hls import project as project_files
    from backends.hls.backend import _tb_inputs

    _, inputs, program = program_of("relu_mlp", pipeline(None))
    config = HLSConfig(part=SMALL_PART)
    graph = lower(program, config)
    graph.tiers = {"l1_out": "ddr", "l2_w": "ddr", "l0_w": "bram"}
    tb_in = _tb_inputs(graph)
    proj = project_files.generate(graph, config, csim.ap_types_dir(), tb_in, emulate.run(graph, tb_in))
    top = proj.files["firmware/kiln_top.cpp"]
    assert sorted(re.findall(r"m_axi port=(\w+)", top)) == ["l1_out", "l2_w"]
    assert "static l1_out_t l1_out[" not in top and "l2(l1_out, l2_out, l2_w);" in top
    assert "static l1_out_t ddr_l1_out[512];" in proj.files["host/kiln_ddr.h"]
    path, _ = csim.build_library(proj, csim.ap_types_dir(), tmp_path)
    library = csim.Library(path, [t.numel for t in graph.inputs], [t.numel for t in graph.outputs])
    for y, e in zip(library.run(list(inputs)), emulate.run(graph, list(inputs))):
        assert torch.equal(y, e.reshape(y.shape))
