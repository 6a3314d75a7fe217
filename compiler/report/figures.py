"""Plotly figures of the report: roofline, stage times, baselines, resources, speedups.

Plotly draws interactive charts (hover, zoom, legend toggles) from a declarative figure,
and its JavaScript ships inside the Python package (`plotly.offline.get_plotlyjs()`),
so the page embeds it once and works offline. Each function returns a `<div>` fragment;
the page loads plotly.js itself (see render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CONFIG = {"displaylogo": False, "responsive": True}


def to_div(fig: Any, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def _layout(fig: Any, title: str, height: int = 360) -> None:
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=50, b=50), template="plotly_white",
                      font=dict(size=11))


def roofline(kernels: Sequence[Any], hw: Any, measured: dict[str, Any] | None, div_id: str = "fig-roofline") -> str:
    """Arithmetic intensity against FLOP/s: the machine's compute and bandwidth ceilings,
    each kernel's modeled point, its measured point where measured, and the whole model's."""
    import plotly.graph_objects as go

    peak, bw = hw.flops(), hw.mem_bandwidth
    points = [k for k in kernels if k.flops > 0 and k.bytes_moved > 0]
    lo = min([k.intensity for k in points] + [peak / bw / 100, 0.01])
    hi = max([k.intensity for k in points] + [peak / bw * 100])
    xs = [lo * (hi / lo) ** (i / 60) for i in range(61)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[min(peak, x * bw) for x in xs], mode="lines", name=f"ceiling ({hw.name})",
                             line=dict(color="#0f172a", width=2),
                             hovertemplate="AI %{x:.3g} FLOP/B<br>ceiling %{y:.3g} FLOP/s<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[k.intensity for k in points], y=[k.modeled_flops_per_s for k in points], mode="markers",
        name="kernels (modeled)", marker=dict(size=8, color="#2563eb", opacity=0.75),
        text=[f"{k.name}: {', '.join(k.ops[:6])}{'...' if len(k.ops) > 6 else ''}<br>{k.modeled_us:.2f} us modeled"
              f"<br>{k.path}" for k in points],
        hovertemplate="%{text}<br>AI %{x:.3g} FLOP/B, %{y:.3g} FLOP/s<extra></extra>"))
    timed = [k for k in points if k.measured_us]
    if timed:  # the same kernels where measured: hollow diamonds, a line to their modeled point
        fig.add_trace(go.Scatter(
            x=[k.intensity for k in timed], y=[k.measured_flops_per_s for k in timed], mode="markers",
            name="kernels (measured)", marker=dict(size=9, symbol="diamond-open", color="#ea580c", line=dict(width=2)),
            text=[f"{k.name}: {', '.join(k.ops[:6])}{'...' if len(k.ops) > 6 else ''}<br>{k.measured_us:.2f} us "
                  f"measured, {k.modeled_us:.2f} us modeled<br>{k.path}" for k in timed],
            hovertemplate="%{text}<br>AI %{x:.3g} FLOP/B, %{y:.3g} FLOP/s<extra></extra>"))
    if measured and measured.get("flops") and measured.get("seconds"):
        fig.add_trace(go.Scatter(
            x=[measured["intensity"]], y=[measured["flops"] / measured["seconds"]], mode="markers",
            name="whole model (measured)", marker=dict(size=13, symbol="star", color="#dc2626"),
            hovertemplate="measured %{y:.3g} FLOP/s at AI %{x:.3g}<extra></extra>"))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP / byte moved)")
    fig.update_yaxes(type="log", title="FLOP/s")
    _layout(fig, f"Roofline: peak {peak / 1e9:.0f} GFLOP/s, {bw / 1e9:.0f} GB/s ({hw.name})", 420)
    return to_div(fig, div_id)


def stage_times(stages: list[tuple[str, float]], div_id: str = "fig-stages") -> str:
    """Compile time by stage as one horizontal bar per stage."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[s for _, s in stages], y=[n for n, _ in stages], orientation="h",
                           marker_color="#0891b2", hovertemplate="%{y}: %{x:.3f} s<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="seconds")
    _layout(fig, "Compile time by stage", 120 + 24 * len(stages))
    return to_div(fig, div_id)


def kernel_times(names: list[str], micros: list[float], measured: list[float | None] | None = None,
                 div_id: str = "fig-kernel-times") -> str:
    """The slowest kernels, slowest first: modeled time, and measured time beside it where taken."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=micros, y=names, orientation="h", marker_color="#2563eb", name="modeled",
                           hovertemplate="%{y}: %{x:.2f} us modeled<extra></extra>"))
    if measured is not None:
        fig.add_trace(go.Bar(x=measured, y=names, orientation="h", marker_color="#ea580c", name="measured",
                             hovertemplate="%{y}: %{x:.2f} us measured<extra></extra>"))
        fig.update_layout(barmode="group")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="time per call (us)")
    title = "Modeled and measured" if measured is not None else "Modeled"
    _layout(fig, f"{title} time per kernel (the {len(names)} slowest)",
            140 + (30 if measured is not None else 18) * len(names))
    return to_div(fig, div_id)


def arena(buffers: list[dict[str, Any]], arena_bytes: Any, bound_bytes: Any, div_id: str) -> str:
    """The memory plan: each buffer a rectangle over its lifetime (steps) and bytes (offset)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, b in enumerate(buffers):
        x0, x1, y0, y1 = b["start"] - 0.45, b["end"] + 0.45, b["offset"], b["offset"] + b["bytes"]
        fig.add_trace(go.Scatter(
            x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], fill="toself", mode="lines", showlegend=False,
            line=dict(width=0.5, color="#1e3a8a"), fillcolor=f"hsla({(k * 47) % 360}, 70%, 60%, 0.6)",
            hoveron="fills", name=f"{b['name']}: {b['bytes']:,} B at {b['offset']:,}, steps {b['start']}-{b['end']}"))
    for y, label, dash, where in ((arena_bytes, "arena", "solid", "top right"),
                                  (bound_bytes, "max-live lower bound", "dot", "top left")):
        if isinstance(y, (int, float)) and y > 0:
            fig.add_hline(y=y, line_dash=dash, line_color="#dc2626", annotation_text=f"{label} {y:,.0f} B",
                          annotation_position=where)
    fig.update_xaxes(title="execution step")
    fig.update_yaxes(title="offset in the arena (bytes)")
    _layout(fig, "Arena: buffers over time (x) and offset (y)", 460)
    return to_div(fig, div_id)


def heatmap(z: list[list[float]], x: list[str], y: list[str], title: str, div_id: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, colorscale="YlOrRd", hovertemplate="%{y}, %{x}: %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    _layout(fig, title, min(900, 160 + 16 * len(y)))
    return to_div(fig, div_id)


def bars(labels: list[str], series: dict[str, list[float | None]], title: str, axis: str, div_id: str,
         log: bool = False) -> str:
    """Grouped bars: one group per label, one bar per series (baselines side by side)."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(name=name, x=labels, y=values) for name, values in series.items()])
    fig.update_layout(barmode="group")
    fig.update_yaxes(title=axis, type="log" if log else "linear")
    _layout(fig, title)
    return to_div(fig, div_id)


def speedups(models: list[str], systems: list[str], cells: dict[tuple[str, str], dict[str, float]],
             div_id: str = "fig-speedups") -> str:
    """Speedup over eager per model and system, with the p10-p90 spread as error bars."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for system in systems:
        ys, lo, hi = [], [], []
        for m in models:
            c = cells.get((m, system))
            ys.append(c["speedup"] if c else None)
            lo.append(c["speedup"] - c["low"] if c else 0)
            hi.append(c["high"] - c["speedup"] if c else 0)
        fig.add_trace(go.Bar(name=system, x=models, y=ys,
                             error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, thickness=1)))
    fig.add_hline(y=1.0, line_dash="dot", line_color="#64748b")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="speedup over eager (median; bars: p90..p10 latency spread)")
    _layout(fig, "Speedup over eager PyTorch per model and system", 440)
    return to_div(fig, div_id)
