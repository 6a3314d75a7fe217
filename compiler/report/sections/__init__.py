"""One report section per decision: a registry from decision key to section renderer.

Every decision pass leaves a summary dict on the module (`kiln.fusion`, `kiln.quantization`,
`kiln.hls_reuse`, `kiln.shard`, `kiln.memory`, ...), which the driver collects into the
report's `decisions`. A renderer turns one summary into a `Section`: the solver card
(chosen, status, objective, bound, gap, time), a baselines table side by side, extra
tables and Plotly figures. A new decision adds one file here with `@register("key")`;
a key with no renderer still gets the generic section (solver card and every field), so
nothing a pass reports is ever missing from the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OK_STATUSES = ("optimal", "uniform", "greedy", "trivial", "exact")


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]
    highlight: int | None = None  # index of the chosen row


@dataclass
class Section:
    key: str
    title: str
    solver: list[tuple[str, str]] = field(default_factory=list)
    status: str | None = None
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status_ok(self) -> bool:
        return self.status is None or self.status in OK_STATUSES


@dataclass
class Context:
    """What a renderer may read besides its own summary."""

    report: dict[str, Any]
    graph: Any = None  # compiler.report.graph.ModelGraph, or None without IR
    partition: int = 0


Renderer = Callable[[dict[str, Any], Context], Section]
RENDERERS: dict[str, Renderer] = {}


def register(*keys: str) -> Callable[[Renderer], Renderer]:
    def wrap(fn: Renderer) -> Renderer:
        for key in keys:
            RENDERERS[key] = fn
        return fn

    return wrap


def fmt(value: Any) -> str:
    """A number as a reader wants it: ints with separators, floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:,.4g}" if abs(value) < 1e15 else f"{value:.3e}"
    return str(value)


def solver_card(s: dict[str, Any], objective: str | None = None, bound: str | None = None,
                seconds: tuple[str, ...] = ("solve_seconds",), extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The rows every decision pass reports: chosen, solver status, objective, bound, gap, time."""
    objective = objective or next((k for k in s if k.startswith("objective")), None)
    bound = bound or next((k for k in s if k.startswith("bound")), None)
    rows = [("chosen", fmt(s.get("chosen", s.get("solver", "-")))), ("solver status", fmt(s.get("status", "-")))]
    if objective:
        rows.append((f"objective ({objective})", fmt(s.get(objective))))
    if bound:
        rows.append((f"bound ({bound})", fmt(s.get(bound))))
    rows.append(("gap", fmt(s.get("gap", "-"))))
    for k in seconds:
        if k in s:
            rows.append((f"time ({k})", f"{float(s[k]) * 1e3:.1f} ms"))
    rows.extend((k, fmt(s[k])) for k in extra if k in s)
    rows.extend((k, fmt(s[k])) for k in ("fallback_reason", "note") if k in s)  # why it fell back
    return rows


def generic(summary: dict[str, Any], ctx: Context, key: str = "") -> Section:
    """Any decision without its own renderer: the solver card and every field it reported."""
    sec = Section(f"decision-{key}", f"Decision: {key}", solver_card(summary), str(summary.get("status", "")) or None)
    sec.tables.append(Table("Everything the pass reported", ["field", "value"],
                            [[k, fmt(v)] for k, v in summary.items()]))
    return sec


def decision_sections(decisions: dict[str, dict[str, Any]], ctx: Context) -> list[Section]:
    """Sections for every decision summary, registered renderer or generic table."""
    _load_builtin()
    out = []
    for key, summary in decisions.items():
        if not isinstance(summary, dict):
            continue
        renderer = RENDERERS.get(key)
        try:
            sec = renderer(summary, ctx) if renderer else generic(summary, ctx, key)
        except Exception as err:  # a renderer bug must not lose the rest of the page
            sec = generic(summary, ctx, key)
            sec.notes.append(f"the {key} renderer failed ({type(err).__name__}: {err}); showing every field")
        sec.key = f"decision-{key}" + (f"-p{ctx.partition}" if ctx.partition else "")
        if len(ctx.report.get("partitions") or []) > 1:
            sec.title += f" (partition {ctx.partition})"
        out.append(sec)
    return out


def _load_builtin() -> None:
    from compiler.report.sections import (  # noqa: F401 - importing registers them
        experts,
        fusion,
        hls,
        memory,
        parallel,
        quantization,
    )
