"""The memory decision: the arena as a time-by-offset chart of buffers, with the lower bound.

The buffers and their lifetimes are recomputed from the optimized IR with the pass's own
`passes/memory/lifetimes.py` (the pass reordered the ops, so program order is its step
order), and each buffer's offset is the one the pass wrote on its producer (`memory`
attribute): the chart is the plan that runs, next to best-fit and the max-live bound.
"""

from __future__ import annotations

from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, fmt, register, solver_card

MAX_BUFFERS_DRAWN = 400


@register("memory")
def memory(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-memory", "Decision: memory (buffer offsets in one arena, tiers)",
                  solver_card(s, "objective_bytes", "bound_bytes", ("solve_seconds", "seconds"),
                              ("buffers", "steps", "internal_values", "pairs", "variables")),
                  str(s.get("status", "")) or None)
    chosen = str(s.get("chosen", ""))
    rows = [[f"{chosen} (chosen)", fmt(s.get("arena_bytes"))], ["best-fit", fmt(s.get("best_fit_bytes"))],
            ["max-live lower bound", fmt(s.get("lower_bound_bytes"))], ["no reuse", fmt(s.get("no_reuse_bytes"))]]
    if "reorder_peak_before_bytes" in s:
        rows.append(["peak before reordering", fmt(s["reorder_peak_before_bytes"])])
    sec.tables.append(Table("Arena size against the baselines", ["plan", "bytes"], rows, 0))
    tiers = [k for k in s if k.startswith("tiers_")]
    if tiers:
        sec.tables.append(Table("Memory tiers", ["field", "value"],
                                [[k, fmt(s[k])] for k in s if k.startswith("tier")]))
    spans = buffers_of(ctx)
    if isinstance(spans, str):
        sec.notes.append(spans)
    elif spans:
        sec.figures.append(figures.arena(spans, s.get("arena_bytes"), s.get("lower_bound_bytes"),
                                         f"fig-arena-{ctx.partition}"))
    if not sec.status_ok:
        sec.notes.append(f"the solver stopped with status {s.get('status')!r}: the plan shown is {chosen!r}")
    return sec


def buffers_of(ctx: Context) -> list[dict[str, Any]] | str:
    """(name, start, end, offset, bytes) of every planned buffer, or why there are none."""
    if ctx.graph is None or ctx.partition not in ctx.graph.modules:
        return "no optimized IR in the report: the arena chart needs it"
    try:
        from xdsl.dialects.builtin import DictionaryAttr

        from ir.program import entry_function
        from passes.memory.lifetimes import ALIGN, lifetimes

        life = lifetimes(entry_function(ctx.graph.modules[ctx.partition]))
    except Exception as err:  # an IR the lifetime analysis refuses: say so, keep the page
        return f"arena chart unavailable: {type(err).__name__}: {err}"
    out = []
    for buf, value in zip(life.buffers[:MAX_BUFFERS_DRAWN], life.values):
        attr = value.owner.attributes.get("memory")  # type: ignore[union-attr]
        if not isinstance(attr, DictionaryAttr) or "offset" not in attr.data:
            continue
        offsets = attr.data["offset"].get_values()  # type: ignore[union-attr]
        offset = offsets[value.index] if value.index < len(offsets) else -1  # type: ignore[attr-defined]
        if offset >= 0:
            out.append({"name": buf.name, "start": buf.start, "end": buf.end, "offset": int(offset),
                        "bytes": buf.size * ALIGN})
    return out
