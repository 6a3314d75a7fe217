"""The fusion decision: groups chosen by the ILP against no fusion and greedy fusion."""

from __future__ import annotations

from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, fmt, register, solver_card

ALTERNATIVES = ("none", "greedy", "ilp", "no_recompute")


@register("fusion")
def fusion(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-fusion", "Decision: fusion (which ops share a kernel)",
                  solver_card(s, "objective_us", "bound_us", ("solve_seconds", "enumerate_seconds", "recompute_seconds"),
                              ("candidates", "recompute_candidates", "recomputed", "recompute_status", "cuts")),
                  str(s.get("status", "")) or None)
    labels = [a for a in ALTERNATIVES if f"kernels_{a}" in s]
    chosen = str(s.get("chosen", s.get("solver", "")))
    rows = [[a + (" (chosen)" if a == chosen else ""), fmt(s[f"kernels_{a}"]), fmt(s.get(f"bytes_{a}")),
             fmt(s.get(f"time_us_{a}"))] for a in labels]
    sec.tables.append(Table("Alternatives side by side (modeled with the roofline)",
                            ["fusion", "kernels", "bytes moved", "modeled time (us)"], rows,
                            labels.index(chosen) if chosen in labels else None))
    if labels:
        sec.figures.append(figures.bars(labels, {"modeled time (us)": [s.get(f"time_us_{a}") for a in labels]},
                                        "Modeled time of each alternative", "us", f"fig-fusion-{ctx.partition}"))
    if not sec.status_ok:
        sec.notes.append(f"the solver stopped with status {s.get('status')!r}: Kiln kept {chosen!r} "
                         "(the best solution known when the time limit hit, or the greedy baseline)")
    return sec
