"""Benchmark results: the data model, and its three renderings (rich table, Markdown, JSON).

One `Results` object is built by the runner and rendered three ways, so the table printed in
the terminal, the Markdown checked into a PR, and the JSON a later script compares against
cannot disagree. The header line of the Markdown names the command, date, torch version,
thread count and CPU, because a latency without its machine and settings is not a result.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from benchmarks.timing import TimingStats, geomean

OK = "ok"


@dataclass
class Row:
    """One (model, system) cell: `status` is "ok", "not installed" or "error: <one line>"."""

    model: str
    system: str
    status: str
    prepare_s: float | None = None
    timing: TimingStats | None = None
    max_abs_err: float | None = None
    matches: bool | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK and self.timing is not None


@dataclass
class Results:
    meta: dict[str, Any]
    models: list[str]
    systems: list[str]
    rows: list[Row]

    def row(self, model: str, system: str) -> Row | None:
        return next((r for r in self.rows if r.model == model and r.system == system), None)

    def speedup(self, model: str, system: str, baseline: str = "eager") -> float | None:
        """baseline latency / system latency for one model; None unless both ran."""
        row, base = self.row(model, system), self.row(model, baseline)
        if row is None or base is None or not (row.ok and base.ok):
            return None
        return base.timing.median_ms / row.timing.median_ms

    def geomean_speedup(self, system: str, baseline: str = "eager") -> float | None:
        return geomean([s for m in self.models if (s := self.speedup(m, system, baseline))])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f"{s}_vs_eager": self.geomean_speedup(s) for s in self.systems if s != "eager"
        }
        for rival in _rivals(self):
            out[f"kiln_vs_{rival}"] = self.geomean_speedup("kiln", rival)
        return out


# --- formatting helpers ------------------------------------------------------------------


def header_line(meta: dict[str, Any]) -> str:
    line = (
        f"`{meta.get('command', '?')}` · {meta.get('date', '?')} · "
        f"torch {meta.get('torch', '?')} · {meta.get('threads', '?')} threads (set explicitly) · "
        f"CPU: {meta.get('cpu', '?')} · Inductor caches {meta.get('inductor_caches', '?')}"
    )
    loads = [x for x in (meta.get("load_avg_start"), meta.get("load_avg_end")) if x is not None]
    if loads and meta.get("cores") and max(loads) > 0.75 * meta["cores"]:
        line += f" · BUSY MACHINE: load average up to {max(loads):.1f} on {meta['cores']} cores"
    return line


def _short(status: str, limit: int = 64) -> str:
    return status if len(status) <= limit else status[: limit - 3] + "..."


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def latency_cell(results: Results, model: str, system: str) -> str:
    row = results.row(model, system)
    if row is None:
        return "-"
    if not row.ok:
        return _short(row.status)
    text = f"{row.timing.median_ms:.3f} ms"
    if system != "eager" and (s := results.speedup(model, system)) is not None:
        text += f" ({_ratio(s)})"
    return text


def prepare_cell(results: Results, model: str, system: str) -> str:
    row = results.row(model, system)
    if row is None or row.prepare_s is None:
        # The latency table and the notes carry the message; here a word is enough.
        return "-" if row is None or row.status == OK else row.status.split(":")[0]
    text = f"{row.prepare_s:.2f} s"
    if "compile_cold_s" in row.info and "compile_warm_s" in row.info:  # Kiln: both compiles
        text = f"{row.info['compile_cold_s']:.2f} s cold, {row.info['compile_warm_s']:.2f} s warm"
    if row.max_abs_err is not None:
        text += f" / {row.max_abs_err:.1e}"
        if row.matches is False:
            text += " MISMATCH"
    return text


# Kiln against each of these, model by model, where both ran (a ratio column and its geomean)
RIVALS = ("inductor", "onnxruntime")


def _rivals(results: Results) -> list[str]:
    return [r for r in RIVALS if "kiln" in results.systems and r in results.systems]


def _latency_columns(results: Results) -> list[str]:
    return ["model", *results.systems, *(f"kiln vs {r}" for r in _rivals(results))]


def latency_rows(results: Results) -> list[list[str]]:
    """Rows of the latency table, a geomean row last; shared by Markdown and rich. The
    `kiln vs X` geomeans are over the models both ran (a failed cell is no ratio)."""
    rivals = _rivals(results)
    rows = []
    for m in results.models:
        cells = [m] + [latency_cell(results, m, s) for s in results.systems]
        cells += [_ratio(results.speedup(m, "kiln", r)) for r in rivals]
        rows.append(cells)
    geo = ["geomean speedup"] + [
        "1.00x" if s == "eager" else _ratio(results.geomean_speedup(s)) for s in results.systems
    ]
    geo += [_ratio(results.geomean_speedup("kiln", r)) for r in rivals]
    rows.append(geo)
    return rows


def prepare_rows(results: Results) -> list[list[str]]:
    return [[m] + [prepare_cell(results, m, s) for s in results.systems] for m in results.models]


def notes(results: Results) -> list[str]:
    """Full error messages and export fallbacks, which the table cells shorten."""
    out = []
    for r in results.rows:
        if r.status not in (OK, "not installed"):
            out.append(f"{r.model} / {r.system}: {r.status}")
        for exporter, why in r.info.get("export_failures", {}).items():
            out.append(f"{r.model} / {r.system}: {exporter} exporter failed: {why}")
        if door := r.info.get("door"):
            out.append(f"{r.model} / {r.system}: through {door}")
    return out


# --- renderings --------------------------------------------------------------------------


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(columns), line(["---"] * len(columns)), *(line(r) for r in rows)]


def to_markdown(results: Results) -> str:
    lines = [f"# Benchmarks: {header_line(results.meta)}", ""]
    lines.append("Latency: median per call over interleaved rounds (speedup vs eager).")
    lines.append("")
    lines += _md_table(_latency_columns(results), latency_rows(results))
    lines += [
        "",
        "Prepare time (compile / export, first call included; Kiln: a cold compile without its "
        "artifact cache and a warm one from it) / max abs error vs eager.",
        "",
    ]
    lines += _md_table(["model", *results.systems], prepare_rows(results))
    if found := notes(results):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in found]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    """JSON cannot hold NaN/inf or arbitrary objects (Kiln's report may carry any)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_json_dict(results: Results) -> dict[str, Any]:
    return _jsonable(
        {
            "meta": results.meta,
            "models": results.models,
            "systems": results.systems,
            "summary": results.summary(),
            "results": [
                {
                    "model": r.model,
                    "system": r.system,
                    "status": r.status,
                    "prepare_s": r.prepare_s,
                    # asdict would deep-copy `info`, which may hold objects that refuse it.
                    "timing": asdict(r.timing) if r.timing is not None else None,
                    "max_abs_err": r.max_abs_err,
                    "matches": r.matches,
                    "speedup_vs_eager": results.speedup(r.model, r.system),
                    "info": r.info,
                }
                for r in results.rows
            ],
        }
    )


def rich_tables(results: Results) -> list[Table]:
    latency = Table(title="Latency: median per call (speedup vs eager)")
    for i, col in enumerate(_latency_columns(results)):
        latency.add_column(col, justify="left" if i == 0 else "right")
    rows = latency_rows(results)
    for r in rows[:-1]:
        latency.add_row(*map(Text, r))  # cells hold error messages: verbatim, not markup
    latency.add_row(*map(Text, rows[-1]), style="bold")
    prepare = Table(title="Prepare time / max abs error vs eager")
    for i, col in enumerate(["model", *results.systems]):
        prepare.add_column(col, justify="left" if i == 0 else "right")
    for r in prepare_rows(results):
        prepare.add_row(*map(Text, r))
    return [latency, prepare]


def write_results(results: Results, out_dir: Path | str, stem: str = "latest") -> tuple[Path, Path]:
    """Write `{stem}.json` and `{stem}.md` under `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(to_json_dict(results), indent=2) + "\n")
    md_path.write_text(to_markdown(results))
    return json_path, md_path


def from_json_dict(data: dict[str, Any]) -> Results:
    """The `Results` a `to_json_dict` wrote (timings and statuses; `info` as stored), so a
    table can be rendered again after its format changed without timing anything again."""
    rows = []
    for r in data["results"]:
        timing = r.get("timing")
        if timing is not None:
            timing = TimingStats(**{**timing, "round_medians_ms": tuple(timing.get("round_medians_ms", ()))})
        rows.append(Row(r["model"], r["system"], r["status"], r.get("prepare_s"), timing,
                        r.get("max_abs_err"), r.get("matches"), r.get("info") or {}))
    return Results(data["meta"], data["models"], data["systems"], rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.report RESULTS.json`: rewrite the .md beside it from the JSON."""
    import sys

    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m benchmarks.report RESULTS.json [...]", file=sys.stderr)
        return 2
    for path in paths:
        results = from_json_dict(json.loads(path.read_text()))
        path.with_suffix(".md").write_text(to_markdown(results))
        print(f"wrote {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
