"""HLS: reuse factor and latency per layer, resources against the part's budget.

The per-layer numbers come from the same layer models the `hls-reuse` ILP chose with
(`passes/reuse_factor.layer_models`, `cost_models/fpga.py`), evaluated at the reuse factor
the pass wrote on each op, so the rows add up to the totals the pass reported.
"""

from __future__ import annotations

from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, fmt, register, solver_card

RESOURCES = ("dsp", "bram_18k", "lut", "ff")


@register("hls_reuse")
def hls_reuse(s: dict[str, Any], ctx: Context) -> Section:
    sec = Section("decision-hls_reuse", "Decision: HLS reuse factors (parallelism per layer)",
                  solver_card(s, "objective_mac_cycles", "bound_mac_cycles", ("solve_seconds",),
                              ("objective", "part", "clock_ns", "precision", "variables")),
                  str(s.get("status", "")) or None)
    headers = ["design", "reuse", "latency (cycles)", "latency (us)", "II (cycles)"] + [r.upper() for r in RESOURCES]
    rows = [["chosen (" + str(s.get("solver", "")) + ")", "per layer", fmt(s.get("latency_cycles")),
             fmt(s.get("latency_us")), fmt(s.get("ii_cycles"))] + [fmt(s.get(r)) for r in RESOURCES],
            [f"uniform reuse {s.get('baseline_reuse')}", fmt(s.get("baseline_reuse")),
             fmt(s.get("baseline_latency_cycles")), fmt(s.get("baseline_latency_us")),
             fmt(s.get("baseline_ii_cycles"))] + [fmt(s.get(f"baseline_{r}")) for r in RESOURCES],
            ["part budget", "-", "-", "-", "-"] + [fmt(s.get(f"budget_{r}")) for r in RESOURCES]]
    sec.tables.append(Table("Chosen reuse factors against the uniform baseline", headers, rows, 0))
    used = [r for r in RESOURCES if s.get(f"budget_{r}")]
    if used:
        sec.figures.append(figures.bars(
            [r.upper() for r in used],
            {"chosen": [100 * s.get(r, 0) / s[f"budget_{r}"] for r in used],
             "uniform baseline": [100 * s.get(f"baseline_{r}", 0) / s[f"budget_{r}"] for r in used]},
            f"Resources used, % of {s.get('part')}'s budget", "% of budget", f"fig-hls-res-{ctx.partition}"))
    layers = per_layer(s, ctx)
    if isinstance(layers, str):
        sec.notes.append(layers)
    elif layers:
        sec.tables.append(Table("Per layer (the layer models the ILP chose with)",
                                ["layer", "reuse factor", "multipliers", "latency (cycles)", "II (cycles)"]
                                + [r.upper() for r in RESOURCES], layers))
    if not sec.status_ok:
        sec.notes.append(f"the solver stopped with status {s.get('status')!r}; the reuse factors shown are the ones built")
    return sec


@register("hls")
def hls_build(s: dict[str, Any], ctx: Context) -> Section:
    """The HLS backend's build summary: precision, testbench, estimated totals."""
    sec = Section("decision-hls", "HLS build: precision, C simulation testbench, estimates", [], None)
    sec.solver = [("part", fmt(s.get("part"))), ("clock", f"{fmt(s.get('clock_ns'))} ns"),
                  ("testbench", f"{fmt(s.get('tb_samples'))} samples, bit-exact: {bool(s.get('tb_bit_exact'))}"),
                  ("latency", f"{fmt(s.get('latency_cycles'))} cycles ({fmt(s.get('latency_us'))} us)")]
    sec.tables.append(Table("Everything the backend reported", ["field", "value"], [[k, fmt(v)] for k, v in s.items()]))
    return sec


def per_layer(s: dict[str, Any], ctx: Context) -> list[list[str]] | str:
    """Rows of (layer, reuse, multipliers, latency, II, resources), or why there are none."""
    if ctx.graph is None or ctx.partition not in ctx.graph.modules:
        return "no optimized IR in the report: per-layer rows need it"
    try:
        from xdsl.dialects.builtin import IntegerAttr

        from cost_models import fpga
        from ir.program import entry_function
        from ir.quant.fixed import FixedPoint
        from passes.reuse_factor import layer_models

        part = fpga.get_part(str(s.get("part", fpga.DEFAULT_PART)))
        bits = FixedPoint.parse(str(s.get("precision", "fixed<16,6>"))).width
        macs, _, _ = layer_models(entry_function(ctx.graph.modules[ctx.partition]), part, bits,
                                  int(s.get("table_size", 1024)))
    except Exception as err:  # the IR may hold ops the layer models do not know
        return f"per-layer rows unavailable: {type(err).__name__}: {err}"
    rows = []
    for op, m in macs:
        attr = op.attributes.get("reuse_factor")
        r = attr.value.data if isinstance(attr, IntegerAttr) else 1
        res = m.resources(r, part).as_dict()
        rows.append([m.name, fmt(r), fmt(m.multipliers(r)), fmt(m.latency(r, part)), fmt(m.interval(r))]
                    + [fmt(res.get(k)) for k in RESOURCES])
    return rows
