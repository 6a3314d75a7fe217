"""The benchmark page (`kiln bench --report bench.html`): speedups per model and system.

Reads the results dict the benchmark runner writes (`benchmarks/report.py`,
latest.json): one bar per (model, system) with the latency spread (p10..p90) as error
bars, the geometric means, and every row's status, so a failed system is shown, not hidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.report import figures
from compiler.report.sections import Section, Table, fmt


def bench_cells(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """speedup over eager and its low/high from the p90/p10 latencies of both systems."""
    rows = {(r["model"], r["system"]): r for r in data.get("results", [])}
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for (model, system), r in rows.items():
        base = rows.get((model, "eager"))
        t, b = r.get("timing"), (base or {}).get("timing")
        if r.get("status") != "ok" or not t or not b:
            continue
        cells[model, system] = {"speedup": b["median_ms"] / t["median_ms"],
                                "low": b["p10_ms"] / t["p90_ms"], "high": b["p90_ms"] / t["p10_ms"]}
    return cells


def render_bench(data: dict[str, Any]) -> str:
    from markupsafe import Markup

    from compiler.report.render import environment, plotly_js

    models, systems = list(data.get("models", [])), list(data.get("systems", []))
    cells = bench_cells(data)
    meta = Section("overview", "Machine and command", [(k, fmt(v)) for k, v in (data.get("meta") or {}).items()])
    summary = Section("summary", "Geometric-mean speedups", [(k, fmt(v)) for k, v in (data.get("summary") or {}).items()])
    chart = Section("speedups", "Speedup over eager per model and system")
    chart.figures.append(figures.speedups(models, [s for s in systems if s != "eager"], cells))
    rows = []
    for r in data.get("results", []):
        t = r.get("timing") or {}
        rows.append([r.get("model"), r.get("system"), r.get("status"), fmt(t.get("median_ms")), fmt(t.get("p10_ms")),
                     fmt(t.get("p90_ms")), fmt(t.get("samples")), fmt(r.get("prepare_s")), fmt(r.get("max_abs_err")),
                     fmt((cells.get((r.get("model"), r.get("system"))) or {}).get("speedup"))])
    table = Section("rows", "Every measurement")
    table.tables.append(Table("model x system", ["model", "system", "status", "median (ms)", "p10 (ms)", "p90 (ms)",
                                                 "samples", "prepare (s)", "max abs err", "speedup"], rows))
    return environment().get_template("bench.html.j2").render(
        title="Kiln benchmarks", sections=[meta, summary, chart, table], plotly_js=Markup(plotly_js()), markup=Markup)


def write_bench_report(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_bench(data), encoding="utf-8")
    return path
