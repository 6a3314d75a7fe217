"""Packed weights join their matmul's kernel: the dequantize-prologue pattern.

The `fuse` pass sees `kiln.dequantize` as opaque (it claims no Elementwise trait, because
packed codes change shape) and never puts a prologue in a contraction's group, so each
quantized weight arrives as a group of its own. Run as is, that group would decode the
whole fp32 weight into memory every call and the matmul would read it back: four times
the bytes of int8, eight times int4's. So after reading the groups, a packed dequantize
whose every use is the weight operand of a matmul or linear, each of which a matmul
kernel will take, moves into those groups; the matmul template then decodes one weight
tile per K step in registers (`matmul.py`, `dequant.py`).

A weight read by several matmuls is decoded in each of their kernels (no buffer is
shared). A dequantize that does not fit the pattern stays alone: a pointwise decode
kernel, or its reference when Triton cannot decode the format.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.ir import Operation

from backends.triton.groups import MATMUL_OPS, Group, make_group, supported, template_for


def fusible_dequantize(op: Operation, owner: dict[Operation, Group]) -> bool:
    """Whether `op` is a packed dequantize that only feeds matmul kernels as their weight."""
    if op.name != "kiln.dequantize" or op.opt("shape") is None or not supported(op):
        return False
    uses = list(op.results[0].uses)
    if not uses or len(owner[op].ops) != 1:
        return False
    return all(
        use.operation.name in MATMUL_OPS
        and use.index == 1
        and use.operation in owner
        and template_for(owner[use.operation]) == "matmul"
        for use in uses
    )


def absorb_dequantize(groups: list[Group], fn: func.FuncOp) -> list[Group]:
    """`groups` with each fusible dequantize moved into the groups of its matmuls."""
    owner = {op: g for g in groups for op in g.ops}
    moving = [g.ops[0] for g in groups if len(g.ops) == 1 and fusible_dequantize(g.ops[0], owner)]
    if not moving:
        return groups
    into: dict[str, list[Operation]] = {}
    for deq in moving:
        for use in deq.results[0].uses:
            into.setdefault(owner[use.operation].name, []).append(deq)
    out: list[Group] = []
    for g in groups:
        if len(g.ops) == 1 and g.ops[0] in moving:
            continue
        extra = into.get(g.name)
        if extra:
            merged = make_group(g.name, list(dict.fromkeys(extra)) + g.ops, fn)
            inner = {d.results[0] for d in extra}
            # Another matmul reading the same weight decodes its own copy: not an output.
            g = Group(merged.name, merged.ops, merged.inputs, [o for o in merged.outputs if o not in inner])
        out.append(g)
    return out
