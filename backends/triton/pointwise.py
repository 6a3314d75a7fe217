"""Pointwise template: elementwise ops and data movement over a flat block of elements.

One program computes BLOCK consecutive elements of each output (masked at the ragged
end). Outputs are grouped into sections by element count; a group whose outputs all
have one count (the usual case) is a 1-D grid, otherwise grid axis 1 picks the section,
so a group is always one kernel. Every output is computed from the group's inputs at its
own flat offset (see `emitter.py`), so reshape chains cost no index arithmetic and a
value used at two indices is recomputed rather than stored.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

from backends.triton.emitter import Expr, Idx, dtype_of, shape_of
from backends.triton.groups import Group
from backends.triton.kernel_spec import BIG, KernelSpec, TemplateContext, cdiv, program_id


def emit_pointwise(group: Group, ctx: TemplateContext) -> list[KernelSpec]:
    sections: dict[int, list] = {}
    for out in group.outputs:
        sections.setdefault(math.prod(shape_of(out)), []).append(out)
    largest = max(sections)
    knobs = ctx.knobs("pointwise", {"numel": largest})
    em = ctx.emitter(f"{group.name}_pointwise", group)
    em.line(f"pid = {program_id(0, largest > BIG)}")
    several = len(sections) > 1
    if several:
        em.line("section = tl.program_id(1)")
    for s, (numel, outs) in enumerate(sections.items()):
        with em.block(f"if section == {s}:") if several else nullcontext():
            name = em.var("pid * BLOCK + tl.arange(0, BLOCK)", prefix="offs")
            offs = Expr(name.text, frozenset({f"({name} < {numel})"}))
            for out in outs:
                value = em.value(out, Idx(shape_of(out), flat=offs))
                em.store(em.output_arg(out), offs, value, dtype_of(out), offs.masks)
    grid = (cdiv(largest, knobs.BLOCK), len(sections)) if several else (cdiv(largest, knobs.BLOCK),)
    source = em.source(list(knobs.constexprs()))
    return [KernelSpec(em.name, "pointwise", group.name, source, em.args, knobs, grid)]
