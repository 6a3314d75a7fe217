"""`map-memory`'s tier decisions in the generated HLS project.

With `map-memory{tiers=fpga part=P}` in the pipeline, every weight and every buffer has a
tier (`memory = {tier = "bram" | "uram" | "ddr"}`). This file maps them to the HLS
arrays the lowering made: a layer's output array is the output of its kiln op, a layer's
weight array comes from the parameter its kiln op reads. The top function then binds each
on-chip array to its memory (`#pragma HLS bind_storage ... impl=bram|uram`). DDR-resident
arrays are marked in a comment only: the `m_axi` port that would stream them in is not
emitted (it would change the top function's signature, which C simulation shares).
Pragmas do not change C simulation, so it stays bit-exact.
"""

from __future__ import annotations

import re

from xdsl.dialects.builtin import DictionaryAttr, StringAttr
from xdsl.ir import Operation


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
        tiers = [_tier(v.owner) for v in op.operands if isinstance(v.owner, Operation)
                 and v.owner.name == "kiln.param"]
        tiers = [t for t in tiers if t is not None]
        if tiers:
            out[weight.name] = tiers[0]
    return out


def pragmas(tiers: dict[str, str]) -> list[str]:
    """Lines for the top function: on-chip arrays bound to their memory, DDR ones noted."""
    lines = []
    for name, tier in sorted(tiers.items()):
        if tier in ("bram", "uram"):
            lines.append(f"#pragma HLS bind_storage variable={name} type=ram_2p impl={tier}")
        elif tier == "ddr":
            lines.append(f"  // {name}: DDR (map-memory); its m_axi port is not emitted yet")
    return lines
