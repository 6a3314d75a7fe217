"""`kiln report SOURCE`: the HTML report of a compile directory or of a benchmark run.

A directory written by `kiln compile --out DIR` holds report.json and each partition's
optimized IR (optimized.mlir, optimized.1.mlir, ...): the page is rendered from those, so
a compile done on another machine (or by CI) can be looked at later. A benchmark
results file (latest.json from `kiln bench`) gives the speedup page instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compiler.cli import err_console, fail


def load_compile_dir(folder: Path) -> dict[str, Any]:
    """report.json with each partition's optimized IR put back from the .mlir files."""
    path = folder / "report.json"
    if not path.exists():
        fail(f"{folder} has no report.json: pass a directory written by `kiln compile --out DIR`")
    report = _read_json(path)
    for index, part in enumerate(report.get("partitions") or []):
        ir = folder / ("optimized.mlir" if index == 0 else f"optimized.{index}.mlir")
        if ir.exists() and not part.get("optimized_ir"):
            part["optimized_ir"] = ir.read_text()
    return report


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror or err}")
    except ValueError as err:  # JSONDecodeError and undecodable bytes
        fail(f"{path} is not JSON ({str(err).splitlines()[0]}): pass a report.json, a --out directory or a bench "
             "latest.json")
    if not isinstance(data, dict):
        fail(f"{path} is not a report (a JSON object)")
    return data


def is_bench_results(data: dict[str, Any]) -> bool:
    return "results" in data and "systems" in data and "models" in data


def run_report(source: Path, output: Path | None) -> None:
    from compiler.report import write_report
    from compiler.report.bench import write_bench_report

    if not source.exists():
        fail(f"{source} does not exist: pass a directory written by `kiln compile --out DIR` or a bench latest.json")
    if source.is_dir():
        data = load_compile_dir(source)
        output = output or source / "report.html"
        path = write_report(data, output)
    else:
        data = _read_json(source)
        output = output or source.with_suffix(".html")
        if is_bench_results(data):
            path = write_bench_report(data, output)
        elif "partitions" in data and "target" in data:
            path = write_report(data, output)
        else:
            fail(f"{source} is neither a compile report.json nor benchmark results (latest.json)")
    err_console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
