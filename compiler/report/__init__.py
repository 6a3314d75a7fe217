"""The HTML report of a compile: every decision Kiln made, in one offline file.

`write_report(report, path)` renders the compile report dict (the one `compile_model`
returns and `kiln compile --out` writes as report.json, with each partition's optimized
IR) to a self-contained page. Imports are lazy: the driver imports this package on every
compile, and Jinja2, Plotly and Graphviz load only when a report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    from compiler.report.render import render_report

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report), encoding="utf-8")
    return path


__all__ = ["write_report"]
