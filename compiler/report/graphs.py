"""One report page per Dynamo graph, and an index page that links them.

`torch.compile(model, backend="kiln", options={"report": "out.html"})` gets one Kiln
compile per Dynamo graph: a graph break splits a model in two, a new shape or a failed
guard adds another. Each compile writes its own self-contained page next to the path
asked for (`out.graph0.html`, `out.graph1.html`, ...) and `out.html` becomes an index
rewritten as graphs arrive. Separate pages rather than one long page: Dynamo compiles
graphs lazily (the second only when a call reaches it), and no compile knows whether
another will follow, so a page written whole at its compile never has to be reopened;
each page keeps its own element ids (graph, sections, figures), which one combined page
would have to rename per graph.

The numbering is per report path and per process: running the script again starts at
graph 0 and overwrites the pages of the last run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Entry:
    index: int
    href: str | None
    target: str
    ops: str
    kernels: str
    partitions: str
    fallbacks: str
    compile_s: str
    note: str = ""


_LOCK = threading.Lock()
_ENTRIES: dict[Path, list[Entry]] = {}


def graph_page(index_path: Path) -> Path:
    """The page the next graph compiled for `index_path` writes: out.graph<k>.html."""
    with _LOCK:
        k = len(_ENTRIES.setdefault(index_path.resolve(), []))
        _ENTRIES[index_path.resolve()].append(Entry(k, None, "-", "-", "-", "-", "-", "-", "compiling"))
    return index_path.with_name(f"{index_path.stem}.graph{k}{index_path.suffix or '.html'}")


def record_graph(index_path: Path, page: Path, report: dict[str, Any] | None, note: str = "") -> Path:
    """Fill the entry of `page` (from its compile report, or a note when it did not
    compile) and rewrite the index."""
    from compiler.report.sections import fmt

    key = index_path.resolve()
    with _LOCK:
        entries = _ENTRIES.setdefault(key, [])
        k = int(page.stem.rsplit(".graph", 1)[1])
        if report is not None:
            falls = ", ".join(f"{f['op']} x{f['count']}" for f in report.get("fallback_ops") or []) or "none"
            entry = Entry(k, page.name, str(report.get("target")), fmt(report.get("num_ops")),
                          fmt(report.get("num_kernels")), fmt(report.get("num_partitions")), falls,
                          fmt(round(float(report.get("compile_s") or 0.0), 3)))
        else:
            entry = Entry(k, None, "-", "-", "-", "-", "-", "-", note)
        entries[k] = entry
        html = render_index(list(entries))
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_text(html, encoding="utf-8")
    return index_path


def render_index(entries: list[Entry]) -> str:
    from compiler.report.render import environment

    return environment().get_template("graphs.html.j2").render(
        title="Kiln report: torch.compile graphs", entries=entries)
