"""`map-memory`'s tier decisions in the generated HLS project.

With `map-memory{tiers=fpga part=P}` in the pipeline, every weight and every buffer has a
tier (`memory = {tier = "bram" | "uram" | "ddr"}`). This file maps them to the HLS
arrays the lowering made (a layer's output array is the output of its kiln op, a layer's
weight array comes from the parameter its kiln op reads) and says what each tier means in
the project:

- BRAM / URAM: the array stays a static array of the top function, bound to its memory
  (`#pragma HLS bind_storage ... impl=bram|uram`);
- DDR: the array leaves the firmware. It becomes an argument of the top function with an
  `m_axi` interface (`offset=slave`, one AXI bundle per array so the reads of different
  weights do not queue on one port); the layer that reads a DDR weight takes it as an
  argument too. The host owns the memory: `host/kiln_ddr.h` holds the DDR weights' values
  (and scratch space for DDR activation buffers), and the testbench and the C bridge pass
  them in. The arithmetic is unchanged, so C simulation stays bit-exact.
"""

from __future__ import annotations

import re

from xdsl.dialects.builtin import DictionaryAttr, StringAttr
from xdsl.ir import Operation

from backends.hls import layers as L


def _tier(op) -> str | None:
    entry = op.attributes.get("memory") if isinstance(op, Operation) else None
    if isinstance(entry, DictionaryAttr) and isinstance(entry.data.get("tier"), StringAttr):
        return entry.data["tier"].data
    return None


def read_tiers(ops: list, produced: dict, layers: list) -> dict[str, str]:
    """HLS array name -> tier, for the arrays whose kiln value has one."""
    out: dict[str, str] = {}
    for value, tensor in produced.items():
        tier = _tier(getattr(value, "owner", None))
        if tier is not None:
            out[tensor.name] = tier
    for layer in layers:
        weight = getattr(layer, "weight", None)
        match = re.search(r"\(op (\d+)\)", layer.origin)
        if weight is None or match is None:
            continue
        op = ops[int(match.group(1))]
        tier = _weight_tier(op.operands[1]) if len(op.operands) > 1 else None
        if tier is not None:
            out[weight.name] = tier
        bias = getattr(layer, "bias", None)
        tier = _weight_tier(op.operands[2]) if bias is not None and len(op.operands) > 2 else None
        if tier is not None:
            out[bias.name] = tier
    return out


def _weight_tier(value) -> str | None:
    """The tier of a layer's weight operand: on the op that makes it (a parameter, or the
    dequantize the backend folds into the weight array), else up its chain of constant ops
    (a reshape or permute of a parameter)."""
    while isinstance(getattr(value, "owner", None), Operation):
        tier = _tier(value.owner)
        if tier is not None or not value.owner.operands:
            return tier
        value = value.owner.operands[0]
    return None


def ddr_weights(graph: L.HLSGraph) -> list[L.Const]:
    """Weights of multiply-accumulate layers that map-memory put in DDR, in layer order."""
    seen: dict[str, L.Const] = {}
    for layer in graph.layers:
        weight = getattr(layer, "weight", None)
        if isinstance(weight, L.Const) and graph.tiers.get(weight.name) == "ddr":
            seen.setdefault(weight.name, weight)
    return list(seen.values())


def ddr_buffers(graph: L.HLSGraph) -> list[L.Tensor]:
    """Layer outputs in DDR (returned tensors are ports already and are never planned)."""
    outputs = {t.name for t in graph.outputs}
    return [layer.output for layer in graph.layers
            if graph.tiers.get(layer.output.name) == "ddr" and layer.output.name not in outputs]


def top_ports(graph: L.HLSGraph) -> list[str]:
    """The top function's extra arguments: DDR weights (read only), then DDR buffers."""
    return ([f"const {c.name}_t {c.name}[{max(c.numel, 1)}]" for c in ddr_weights(graph)]
            + [f"{t.name}_t {t.name}[{t.numel}]" for t in ddr_buffers(graph)])


def host_args(graph: L.HLSGraph) -> list[str]:
    """What the testbench and the bridge pass for `top_ports` (arrays of `host/kiln_ddr.h`)."""
    return [f"ddr_{c.name}" for c in ddr_weights(graph)] + [f"ddr_{t.name}" for t in ddr_buffers(graph)]


def pragmas(graph: L.HLSGraph) -> list[str]:
    """Lines for the top function: on-chip arrays bound to their memory, DDR ones as m_axi."""
    ddr = [c.name for c in ddr_weights(graph)] + [t.name for t in ddr_buffers(graph)]
    depth = {c.name: max(c.numel, 1) for c in ddr_weights(graph)} | {t.name: t.numel for t in ddr_buffers(graph)}
    lines = [f"#pragma HLS INTERFACE m_axi port={name} offset=slave bundle=gmem{k} depth={depth[name]}"
             for k, name in enumerate(ddr)]
    on_chip = {t.name for layer in graph.layers for t in [layer.output]} | {c.name for c in graph.consts()}
    for name, tier in sorted(graph.tiers.items()):
        if tier in ("bram", "uram") and name in on_chip:
            lines.append(f"#pragma HLS bind_storage variable={name} type=ram_2p impl={tier}")
    return lines


def with_ddr_weight(text: str, layer: L.Layer, signature: str) -> str:
    """A layer function that reads its weight from an argument (the top's m_axi port)
    instead of the firmware's constant array; the weight is no longer partitioned into
    banks (an AXI port is read a burst at a time)."""
    weight: L.Const = layer.weight  # type: ignore[attr-defined]
    port = f"const {weight.name}_t {weight.name}[{max(weight.numel, 1)}]"
    text = text.replace(signature + " {", signature[:-1] + f", {port})" + " {", 1)
    return re.sub(rf"#pragma HLS ARRAY_PARTITION variable={weight.name} block factor=\d+",
                  f"// {weight.name}: read from DDR through the top function's m_axi port", text)


def host_header(graph: L.HLSGraph, raw: callable) -> str:  # type: ignore[valid-type]
    """The host's side of the DDR tier: weight values (loaded from raw integers, as the
    firmware's C simulation constants are) and scratch arrays for DDR buffers."""
    lines = ["// Arrays map-memory placed in DDR: the host's copy, passed to the top function's",
             "// m_axi ports by the testbench and the bridge. Kiln's HLS backend, generated file.",
             "#ifndef KILN_DDR_H", "#define KILN_DDR_H", '#include "../firmware/kiln_types.h"',
             '#include "../firmware/kiln_hls.h"', ""]
    for c in ddr_weights(graph):
        n = max(c.numel, 1)
        lines += [f"static {c.name}_t ddr_{c.name}[{n}];",
                  f"static const long long ddr_{c.name}_raw[{n}] = {{\n    {raw(c)}\n}};",
                  f"static const bool ddr_{c.name}_ready = kiln::fill(ddr_{c.name}, ddr_{c.name}_raw, {n});"]
    for t in ddr_buffers(graph):
        lines.append(f"static {t.name}_t ddr_{t.name}[{t.numel}];  // scratch for a DDR activation buffer")
    return "\n".join(lines + ["", "#endif", ""])
