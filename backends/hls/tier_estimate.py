"""The HLS resource estimate with `map-memory`'s tiers: where each array's bits live.

`hls-reuse` estimates BRAM as if every array sat where the layers put it by default (weight
banks in BRAM or LUTRAM by depth, activation buffers in BRAM above 1024 elements,
`cost_models.fpga`). With tiers the arrays live where the tier plan says, so the memory part
of the estimate is recomputed array by array:

- an array in BRAM takes ceil(bits / 18 Kb) BRAM18 blocks, in URAM ceil(bits / 288 Kb)
  URAM blocks (the count the tier plan used), in DDR nothing on chip;
- an array without a tier keeps the default model;
- what `hls-reuse` counted beyond the arrays (lookup tables of activations, softmax and
  norms) is kept: its BRAM total minus its default cost of the arrays.

DDR traffic per sample: a dense or conv weight is read once per row it processes (the
layer's reuse loop walks the whole weight for each row), an activation buffer written once
and read once per reader. Its modeled cost in cycles at the kernel's clock: the bytes over
the DDR bandwidth plus one AXI burst latency per pass over an array; the layers wait for
their reads, so it adds to the latency (a dataflow design could overlap part of it).
"""

from __future__ import annotations

import math

from backends.hls import layers as L
from backends.hls.config import HLSConfig
from backends.hls.tiers import ddr_buffers, ddr_weights
from cost_models import fpga

BRAM18_BITS = fpga.BRAM18_BITS


def _default_bram(array: L.Tensor | L.Const, layer: L.Layer | None) -> int:
    """BRAM18 blocks the default model gives an array (the model `hls-reuse` budgets with)."""
    if isinstance(array, L.Const) and not isinstance(layer, L.Dense):
        return 0  # a bias: registers or LUTs in the default model
    if isinstance(array, L.Const):
        assert isinstance(layer, L.Dense)
        reuse, bits = layer.reuse, array.type.width
        if reuse < fpga.LUTRAM_MAX_DEPTH:  # folded into logic (R = 1) or a LUTRAM ROM
            return 0
        return (layer.mults // reuse) * math.ceil(bits / 18) * math.ceil(reuse / 1024)
    return fpga.buffer_cost(array.numel, array.type.width).bram_18k


def _arrays(graph: L.HLSGraph) -> list[tuple[L.Tensor | L.Const, L.Layer | None, int]]:
    """(array, the layer that reads it as a weight or None, its DDR passes per sample)."""
    out: list[tuple[L.Tensor | L.Const, L.Layer | None, int]] = []
    seen: set[str] = set()
    outputs = {t.name for t in graph.outputs}
    readers: dict[str, int] = {}
    for layer in graph.layers:
        for t in layer.inputs:
            readers[t.name] = readers.get(t.name, 0) + 1
    for layer in graph.layers:
        weight = getattr(layer, "weight", None)
        if isinstance(layer, L.Dense) and isinstance(weight, L.Const) and weight.name not in seen:
            seen.add(weight.name)
            out.append((weight, layer, layer.rows))
        bias = getattr(layer, "bias", None)
        if isinstance(bias, L.Const) and bias.name not in seen:
            seen.add(bias.name)
            out.append((bias, None, layer.rows))
        if layer.output.name not in outputs:
            out.append((layer.output, None, 1 + readers.get(layer.output.name, 0)))
    return out


def memory_estimate(graph: L.HLSGraph, config: HLSConfig, reuse_bram: int | None) -> dict[str, float | int]:
    """Keys for the build report: memory use per tier, DDR traffic and its latency, totals."""
    part = fpga.get_part(config.part)
    bram = uram = ddr_bytes = traffic = default = passes = 0
    for array, layer, reads in _arrays(graph):
        bits = array.numel * array.type.width
        default += _default_bram(array, layer)
        tier = graph.tiers.get(array.name)
        if tier == "bram":
            bram += math.ceil(bits / BRAM18_BITS)
        elif tier == "uram":
            uram += math.ceil(bits / fpga.URAM_BITS)
        elif tier == "ddr":
            ddr_bytes += math.ceil(bits / 8)
            traffic += reads * math.ceil(bits / 8)
            passes += reads
        else:
            bram += _default_bram(array, layer)
    other = max(0, (reuse_bram or 0) - default)  # tables and whatever else hls-reuse counted
    bytes_per_cycle = fpga.DDR_BANDWIDTH * config.clock_ns * 1e-9
    ddr_cycles = math.ceil(traffic / bytes_per_cycle) + passes * fpga.AXI_LATENCY_CYCLES if traffic else 0
    uram_budget = fpga.URAM_BLOCKS.get(part.name, 0)
    return {
        "mem_tiers": int(bool(graph.tiers)),
        "mem_bram_18k": bram,
        "mem_uram": uram,
        "mem_ddr_bytes": ddr_bytes,
        "mem_ddr_weights": len(ddr_weights(graph)),
        "mem_ddr_buffers": len(ddr_buffers(graph)),
        "mem_other_bram_18k": other,
        "bram_18k_total": bram + other,
        "part_bram_18k": part.bram_18k,
        "part_uram": uram_budget,
        "fits_part_memory": int(bram + other <= part.bram_18k and uram <= uram_budget),
        "ddr_traffic_bytes": traffic,
        "ddr_latency_cycles": ddr_cycles,
        "ddr_latency_us": ddr_cycles * config.clock_ns * 1e-3,
    }
