"""The quantization decision: format per layer, bytes and error, against the uniform formats."""

from __future__ import annotations

import re
from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, fmt, register, solver_card


@register("quantization")
def quantization(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-quantization", "Decision: quantization (number format per layer)",
                  solver_card(s, "objective", None, ("solve_seconds",),
                              ("mode", "sensitivity", "budget_bytes", "avg_bits", "formats", "variables",
                               "refinements", "skipped", "permuted_sites", "baseline_uniform", "baseline_bytes",
                               "baseline_objective")),
                  str(s.get("status", "")) or None)
    budget = s.get("budget_bytes")

    def fits(nbytes: Any) -> str:
        return "-" if not isinstance(budget, int | float) or nbytes is None else fmt(nbytes <= budget)

    applied = "greedy (the solver fell back)" if s.get("status") == "fallback" else str(s.get("solver", "ilp"))
    rows = [[f"{applied} (applied)", fmt(s.get("bytes")), fits(s.get("bytes")), fmt(s.get("objective")),
             fmt(s.get("rel_error")), fmt(s.get("latency_us"))]]
    if "bytes_greedy" in s:
        rows.append(["greedy", fmt(s["bytes_greedy"]), fits(s["bytes_greedy"]), fmt(s.get("objective_greedy")),
                     fmt(s.get("rel_error_greedy")), fmt(s.get("latency_us_greedy"))])
    for name in sorted({m.group(1) for k in s if (m := re.match(r"uniform_(.+)_bytes$", k))}):
        nbytes = s.get(f"uniform_{name}_bytes")
        rows.append([f"uniform {name}", fmt(nbytes), fits(nbytes), fmt(s.get(f"uniform_{name}_objective")),
                     fmt(s.get(f"uniform_{name}_rel_error")), fmt(s.get(f"uniform_{name}_latency_us"))])
    if "bytes_fp32" in s:
        rows.append(["fp32 (no quantization)", fmt(s["bytes_fp32"]), fits(s["bytes_fp32"]), "0", "0", "-"])
    sec.tables.append(Table("Applied formats against the baselines",
                            ["plan", "weight bytes", "within the budget", "error objective (sum of layer sensitivities)",
                             "relative output error", "modeled latency (us)"], rows, 0))
    layers = _layers(ctx)
    if layers:
        sec.tables.append(layer_table(s, layers))
        names = [str(n.quant_info.get("weight", n.id)) for n in layers]
        base = s.get("baseline_uniform")
        series = {"chosen": [n.quant_info.get("sensitivity") for n in layers]}
        if base is not None:
            series[f"uniform {base}"] = [n.quant_info.get("uniform_sensitivity") for n in layers]
        sec.figures.append(figures.bars(names, series, "Error contribution per layer: chosen format against the "
                                        "uniform baseline", "sensitivity (log)", f"fig-quant-{ctx.partition}", log=True))
        sec.figures.append(figures.bars(names, {"bits per weight": [n.quant_info.get("bits") for n in layers]},
                                        "Bits per weight, per layer", "bits", f"fig-quant-bits-{ctx.partition}"))
    if not sec.status_ok:
        sec.notes.append(f"the solver stopped with status {s.get('status')!r}; the plan shown is the one applied")
    return sec


def layer_table(s: dict[str, Any], layers: list[Any]) -> Table:
    """One row per layer: the chosen format's bytes and error contribution beside the same
    layer's under the uniform baseline (`baseline_uniform`), and a totals row that equals
    the pass's summary (`bytes`, `objective`, `baseline_bytes`, `baseline_objective`)."""
    base = s.get("baseline_uniform", "-")
    q = [n.quant_info for n in layers]
    rows = [[n.op, i.get("weight", "-"), i.get("format", "-"), fmt(i.get("bits")), fmt(i.get("bytes")),
             fmt(i.get("sensitivity")), i.get("uniform_format", "-"), fmt(i.get("uniform_bytes")),
             fmt(i.get("uniform_sensitivity")), fmt(i.get("fp32_bytes"))] for n, i in zip(layers, q)]
    total = ["total", f"{len(layers)} layers", s.get("formats", "-"), fmt(s.get("avg_bits")),
             fmt(sum(i.get("bytes") or 0 for i in q)), fmt(sum(i.get("sensitivity") or 0.0 for i in q)),
             f"uniform {base}", fmt(sum(i.get("uniform_bytes") or 0 for i in q)),
             fmt(sum(i.get("uniform_sensitivity") or 0.0 for i in q)), fmt(sum(i.get("fp32_bytes") or 0 for i in q))]
    return Table(f"Format per layer against the uniform baseline ({base}: the uniform format of least error within "
                 "the budget); the error contribution is the layer's measured sensitivity",
                 ["op", "weight", "format", "bits", "bytes", "error contribution", "uniform format", "uniform bytes",
                  "uniform error contribution", "fp32 bytes"], rows + [total])


def _layers(ctx: Context) -> list[Any]:
    if ctx.graph is None:
        return []
    seen, out = set(), []
    for n in ctx.graph.nodes:
        w = n.quant_info.get("weight")
        if n.partition == ctx.partition and n.quant_info and w not in seen:
            seen.add(w)
            out.append(n)
    return out
