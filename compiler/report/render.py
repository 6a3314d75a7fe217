"""Render a compile report dict to one self-contained HTML page (Jinja2 template).

The page inlines everything it needs: plotly.js from the installed plotly package, the
graph as SVG laid out by Graphviz, and a short script for pan, zoom and search. Nothing is
fetched at view time, so the file opens from disk on a machine with no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compiler.report import figures
from compiler.report.sections import Context, Section, Table, decision_sections, fmt

TEMPLATES = Path(__file__).resolve().parent / "templates"


def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    return env


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def ir_texts(report: dict[str, Any]) -> list[str]:
    return [p["optimized_ir"] for p in report.get("partitions", []) if p.get("optimized_ir")]


def render_report(report: dict[str, Any]) -> str:
    """The whole page for one compile."""
    from markupsafe import Markup

    from compiler.report.graph import build_graph
    from compiler.report.graph_svg import GraphvizMissing, render_svg
    from compiler.report.kernels import kernel_costs

    texts = ir_texts(report)
    graph = build_graph(report, texts) if texts else None
    svg, graph_note = "", ""
    if graph is None:
        graph_note = "the report holds no optimized IR (compiled before the report existed?): no graph"
    else:
        try:
            svg = render_svg(graph)
        except GraphvizMissing as err:
            graph_note = str(err)
    sections: list[Section] = [overview(report)]
    kernels, hw = (kernel_costs(graph, report.get("target", ""), report.get("measured")) if graph is not None
                   else ([], None))
    if kernels:
        sections.append(kernel_section(report, kernels, hw))
    sections.append(stage_section(report))
    if report.get("fallback_ops"):
        sections.append(fallback_section(report))
    decisions = decisions_by_partition(report)
    for index, decs in decisions:
        sections.extend(decision_sections(decs, Context(report, graph, index)))
    nodes = [n.as_dict() for n in graph.nodes] if graph is not None else []
    groups = graph.groups() if graph is not None else []
    return environment().get_template("report.html.j2").render(
        title=f"Kiln report: {report.get('model', '?')} on {report.get('target', '?')}",
        report=report, sections=sections, svg=Markup(svg), graph_note=graph_note, nodes=nodes,
        nodes_json=Markup(json.dumps(nodes).replace("</", "<\\/")), num_groups=len(groups),
        num_islands=len(graph.fallback_islands()) if graph is not None else 0,
        decision_keys=[s.key for s in sections if s.key.startswith("decision-")],
        plotly_js=Markup(plotly_js()), markup=Markup)


def decisions_by_partition(report: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    parts = report.get("partitions") or []
    if parts:
        return [(i, p.get("decisions") or {}) for i, p in enumerate(parts)]
    return [(0, report.get("decisions") or {})]


def overview(report: dict[str, Any]) -> Section:
    rows = [("model", report.get("model")), ("target", report.get("target")), ("pipeline", report.get("pipeline")),
            ("ops", report.get("num_ops")), ("kernels", report.get("num_kernels")),
            ("partitions", report.get("num_partitions")),
            ("FLOPs run by Kiln", _share(report.get("kiln_flop_share"))),
            ("compile", f"{fmt(report.get('compile_s'))} s" + (" (artifact cache hit)" if report.get("cache_hit") else "")),
            ("tuned kernels", f"{fmt(report.get('tuned_kernels', 0))} ({fmt(report.get('tuning_hits', 0))} tuning-cache hits)")]
    if "kiln_ms" in report:
        rows += [("latency", f"Kiln {fmt(report.get('kiln_ms'))} ms, eager {fmt(report.get('eager_ms'))} ms, "
                             f"speedup {fmt(report.get('speedup'))}x ({report.get('timing_mode', '')})"),
                 ("max abs error vs eager", f"{fmt(report.get('max_abs_err'))} ({report.get('check', '')})")]
    if report.get("timing_warning"):
        rows.append(("timing warning", report["timing_warning"]))
    if report.get("rel_rms_err") is not None:
        rows.append(("relative RMS error vs fp32", fmt(report["rel_rms_err"])))
    for note in report.get("notes") or []:
        rows.append(("note", note))
    return Section("overview", "Overview", [(k, fmt(v)) for k, v in rows])


def _share(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def kernel_section(report: dict[str, Any], kernels: list[Any], hw: Any) -> Section:
    total_flops = sum(k.flops for k in kernels)
    total_bytes = sum(k.bytes_moved for k in kernels)
    measured = None
    if report.get("kiln_ms") and total_flops and report.get("target") != "hls":
        measured = {"flops": total_flops, "seconds": report["kiln_ms"] * 1e-3,
                    "intensity": total_flops / total_bytes if total_bytes else 0.0}
    timed = [k for k in kernels if k.measured_us is not None]
    sec = Section("kernels", "Kernels: modeled and measured time on the roofline")
    sec.solver = [("hardware", f"{hw.name}: {hw.flops() / 1e9:.0f} GFLOP/s fp32, {hw.mem_bandwidth / 1e9:.1f} GB/s, "
                               f"{hw.launch_overhead_s * 1e6:.1f} us per kernel"),
                  ("kernels", fmt(len(kernels))),
                  ("modeled total", f"{sum(k.modeled_us for k in kernels):,.1f} us"),
                  ("measured per kernel", measured_summary(report.get("measured"), timed, len(kernels)))]
    if measured:
        sec.solver.append(("measured whole model", f"{fmt(report.get('kiln_ms'))} ms ({report.get('timing_mode', '')})"))
    sec.figures.append(figures.roofline(kernels, hw, measured))
    slowest = sorted(kernels, key=lambda k: -max(k.modeled_us, k.measured_us or 0.0))[:25]
    labels = [f"{k.name} ({'+'.join(k.ops[:3])}{'+...' if len(k.ops) > 3 else ''})" for k in slowest]
    sec.figures.append(figures.kernel_times(labels, [k.modeled_us for k in slowest],
                                            [k.measured_us for k in slowest] if timed else None))
    no_flops = sum(1 for k in kernels if not k.flops)
    if no_flops:
        sec.notes.append(f"{no_flops} of {len(kernels)} kernels do no arithmetic (data movement: reshape, permute, "
                         "slice, ...): they have no point on the roofline's log axes, only a modeled time")
    unattributed = unattributed_calls(report.get("measured"))
    if unattributed:
        sec.notes.append("measured calls not attributed to a Kiln kernel: " + ", ".join(unattributed))
    above = [k for k in timed if k.flops and k.bytes_moved
             and k.measured_flops_per_s > min(hw.flops(), k.intensity * hw.mem_bandwidth)]
    if above:
        sec.notes.append(f"{len(above)} kernels measured above the roofline: their operands sit in cache, while the "
                         "model charges every byte at memory bandwidth")
    rows = [[k.name, ", ".join(k.ops[:8]) + (" ..." if len(k.ops) > 8 else ""), fmt(k.flops), fmt(k.bytes_moved),
             fmt(round(k.intensity, 3)), fmt(k.modeled_us), measured_cell(k, bool(timed)), k.path] for k in kernels]
    sec.tables.append(Table("Every kernel", ["kernel", "ops", "FLOPs", "bytes moved", "FLOP/byte",
                                             "modeled (us)", "measured (us)", "path"], rows))
    return sec


def measured_cell(kernel: Any, any_timed: bool) -> str:
    if kernel.measured_us is not None:
        return fmt(round(kernel.measured_us, 2))
    if any_timed and set(kernel.ops) <= {"reshape"}:
        return "no call (a view)"
    return "not measured"


def measured_summary(measured: dict[str, Any] | None, timed: list[Any], num_kernels: int) -> str:
    """One line: the kernels' measured sum against the whole call they were measured in."""
    if not measured:
        return "not measured (the report was rendered from a compile that did not measure: kiln compile --report does)"
    if not timed:
        reasons = {p.get("not_measured") for p in measured.get("partitions") or [] if p.get("not_measured")}
        return "; ".join(sorted(reasons)) or "not measured"
    total = sum(k.measured_us for k in timed)
    overhead = sum(p.get("vm_overhead_us", 0.0) for p in measured.get("partitions") or [])
    return (f"{len(timed)} of {num_kernels} kernels timed, {total:,.1f} us in kernels + {overhead:,.1f} us in VM "
            f"builtins, of a {fmt(measured.get('call_ms'))} ms call (median of {measured.get('repeats')} runs, "
            "each kernel on the real inputs)")


def unattributed_calls(measured: dict[str, Any] | None) -> list[str]:
    return [f"{c['symbol']} ({c['us']:.1f} us)" for p in (measured or {}).get("partitions") or []
            for c in p.get("calls") or [] if "group" not in c and c.get("op_index") is None]


def stage_section(report: dict[str, Any]) -> Section:
    stages = compile_stages(report)
    sec = Section("stages", "Compile time by stage, cache hits")
    parts = report.get("partitions") or []
    sec.solver = [("compile", f"{fmt(report.get('compile_s'))} s"),
                  ("artifact cache", f"{sum(1 for p in parts if p.get('cache_hit'))}/{len(parts)} partitions hit"),
                  ("tuning cache", f"{fmt(report.get('tuning_hits', 0))} kernels found a tuned record")]
    if report.get("startup_s") is not None:
        sec.solver.append(("startup (not in compile)", f"{fmt(report['startup_s'])} s importing torch.export and the backend"))
    sec.figures.append(figures.stage_times(stages))
    sec.tables.append(Table("Per partition", ["partition", "ops", "kernels", "build (s)", "artifact cache hit"],
                            [[str(i), fmt(p.get("num_ops")), fmt(p.get("num_kernels")), fmt(p.get("build_s")),
                              fmt(bool(p.get("cache_hit")))] for i, p in enumerate(parts)]))
    return sec


def compile_stages(report: dict[str, Any]) -> list[tuple[str, float]]:
    """capture, each pass, each partition's build, and the rest of the compile."""
    stages = [("capture", float(report.get("capture_s") or 0.0))]
    stages += [(f"pass {p['name']}", float(p["seconds"])) for p in report.get("passes") or []]
    parts = report.get("partitions") or []
    stages += [(f"build{'' if len(parts) == 1 else f' p{i}'}", float(p.get("build_s") or 0.0)) for i, p in enumerate(parts)]
    rest = float(report.get("compile_s") or 0.0) - sum(s for _, s in stages)
    if rest > 0:
        stages.append(("other (partitioning, conversion, IR printing)", rest))
    return stages


def fallback_section(report: dict[str, Any]) -> Section:
    sec = Section("fallbacks", "Eager fallbacks")
    sec.solver = [("FLOPs in eager", f"{fmt(report.get('flops_fallback'))} of {fmt(report.get('flops_total'))}")]
    sec.tables.append(Table("Ops that run in eager PyTorch", ["op", "count"],
                            [[f.get("op"), fmt(f.get("count"))] for f in report.get("fallback_ops", [])]))
    sec.notes.extend(report.get("fallback_reasons") or [])
    return sec

