"""The real-model coverage table: every suite model through every front door and target.

`python -m benchmarks.coverage [--models a,b] [--doors dynamo-tvm,export-tvm,dynamo-triton,export-hls]
[--smoke] [--out DIR]` runs each model of `benchmarks/models.py` as a user would and
classifies each (model, door) cell:

- `ok`: outputs match eager (atol/rtol 1e-4 relative to the output's scale; HLS, which
  computes in 16-bit fixed point, within 2% of the output's scale), all ops in Kiln;
- `fallback`: matches eager, some ops ran in eager (which ops, and the share of the
  contraction FLOPs that Kiln's kernels run, flagged when under half);
- `mismatch`: ran, but the outputs differ from eager (the max abs error);
- `refused`: Kiln refused with its own one-line error naming the cause (torch.export
  cannot capture the model; HLS has no lowering for an op and no eager fallback), which
  is the contract, not a crash;
- `error`: anything else: a crash. The goal is zero of these.

The doors: `dynamo-tvm` is `torch.compile(model, backend="kiln")`; `export-tvm` is
`compile_model(model, inputs, target="tvm")` (torch.export); `dynamo-triton` is
torch.compile with `options={"target": "triton"}` under Triton's interpreter (only the
models marked for it: the interpreter is slow); `export-hls` is `compile_model(...,
target="hls")`, checked through the emulation, never the C simulation (that is the HLS
tests' job). Results go to `benchmarks/results/coverage.{md,json}` with `--update-results`,
else to `--out` (default `./kiln-coverage`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.models import SUITE, RealModel, build

DOORS = ("dynamo-tvm", "export-tvm", "dynamo-triton", "export-hls")
# HLS computes in 16-bit fixed point: the zoo's mlp is off by 1.6% of its logits' scale
HLS_REL_TOL = 0.02
RESULTS = Path(__file__).parent / "results"


@dataclass
class Cell:
    model: str
    door: str
    status: str  # ok | fallback | mismatch | refused | error | skipped
    max_err: float | None = None
    fallback_ops: list[str] = field(default_factory=list)
    kiln_flop_share: float | None = None
    graphs: int = 0  # Dynamo graphs (graph breaks + 1)
    ops: int = 0
    kernels: int = 0
    seconds: float = 0.0
    message: str = ""


class _ReportCatcher(logging.Handler):
    """Collects the compile reports `compiler.torch_backend` logs for each Dynamo graph."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reports: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        report = getattr(record, "kiln_report", None)
        if report is not None:
            self.reports.append(report)


def run_cell(entry: RealModel, door: str) -> Cell:
    """One model through one door, classified; never raises."""
    start = time.perf_counter()
    try:
        cell = _run(entry, door)
    except Exception as err:  # the cell records the crash; the table goes on
        cell = Cell(entry.name, door, _classify_error(err), message=_one_line(err))
        if cell.status == "error" and os.environ.get("KILN_COVERAGE_TRACEBACKS"):
            traceback.print_exc()
    cell.seconds = round(time.perf_counter() - start, 2)
    return cell


def _run(entry: RealModel, door: str) -> Cell:
    model, inputs = build(entry.name)
    with torch.no_grad():
        expected = model(*inputs)
    if door.startswith("dynamo"):
        outputs, reports = _through_dynamo(model, inputs, door.split("-")[1])
    else:
        from compiler import compile_model

        compiled = compile_model(model, inputs, target=door.split("-")[1], use_cache=False)
        outputs, reports = compiled(*inputs), [compiled.report]
    return _judge(entry.name, door, expected, outputs, reports)


def _through_dynamo(model, inputs, target: str):
    torch._dynamo.reset()
    # Dynamo skips nn.LSTM/GRU modules unless told otherwise (they would run in eager
    # whole); a user compiling an RNN sets this too, as the README says
    torch._dynamo.config.allow_rnn = True
    catcher = _ReportCatcher()
    log = logging.getLogger("compiler.torch_backend")
    log.addHandler(catcher)
    previous = log.level
    log.setLevel(logging.INFO)
    try:
        compiled = torch.compile(model, backend="kiln", options={"target": target, "use_cache": False})
        with torch.no_grad():
            outputs = compiled(*inputs)
    finally:
        log.removeHandler(catcher)
        log.setLevel(previous)
    return outputs, catcher.reports


def _judge(name: str, door: str, expected, outputs, reports: list[dict[str, Any]]) -> Cell:
    exp, out = _as_tensor(expected), _as_tensor(outputs)
    err = float((exp.float() - out.float()).abs().max()) if exp.shape == out.shape else float("inf")
    scale = float(exp.float().abs().max()) or 1.0
    fallback = sorted({f["op"] for r in reports for f in r["fallback_ops"]})
    total = sum(r.get("flops_total", 0) for r in reports)
    eager = sum(r.get("flops_fallback", 0) for r in reports)
    share = (1.0 - eager / total) if total else None
    if any(r.get("kiln_flop_share", 0) is None for r in reports):  # an op torch cannot count
        share = None
    cell = Cell(name, door, "ok", max_err=err, fallback_ops=fallback, kiln_flop_share=share, graphs=len(reports),
                ops=sum(r["num_ops"] for r in reports), kernels=sum(r["num_kernels"] for r in reports))
    if door.endswith("hls"):  # fixed point (ap_fixed, calibrated per tensor): judged relative to scale
        cell.message = f"fixed point, max error {err / scale:.2%} of the output's scale"
        if not err <= HLS_REL_TOL * scale:
            cell.status = "mismatch"
    elif not err <= 1e-4 + 1e-4 * scale:
        cell.status, cell.message = "mismatch", f"max abs error {err:.3g} (output scale {scale:.3g})"
    elif not reports:
        cell.status, cell.message = "fallback", "Kiln compiled no graph (all eager)"
    elif fallback or any(r["num_ops"] == 0 for r in reports):
        cell.status = "fallback"
    return cell


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)) and x:
        return _as_tensor(x[0])
    raise TypeError(f"cannot compare output of type {type(x).__name__}")


def _classify_error(err: Exception) -> str:
    """`refused`: Kiln's own one-line error (torch.export cannot capture the model, HLS has
    no lowering for an op and no eager fallback); `error`: anything else, a crash."""
    package = type(err).__module__.split(".")[0]
    one_line = len(str(err).strip().splitlines()) <= 1
    if package in ("compiler", "backends", "passes", "ir") and one_line:
        return "refused"
    return "error"


def _one_line(err: Exception) -> str:
    from compiler.capture.errors import first_line

    return f"{type(err).__name__}: {first_line(err)}"[:300]


# --- tables ------------------------------------------------------------------------------


def cell_text(cell: Cell) -> str:
    if cell.status == "skipped":
        return "-"
    if cell.status == "ok":
        return f"ok ({cell.message})" if cell.message else "ok"
    if cell.status == "fallback":
        share = ", FLOP share unknown" if cell.kiln_flop_share is None else f", {cell.kiln_flop_share:.0%} FLOPs in Kiln"
        flag = " (under half)" if cell.kiln_flop_share is not None and cell.kiln_flop_share < 0.5 else ""
        ops = ", ".join(o.removeprefix("aten.") for o in cell.fallback_ops[:3])
        more = f" +{len(cell.fallback_ops) - 3}" if len(cell.fallback_ops) > 3 else ""
        return f"fallback: {ops or 'whole graph'}{more}{share}{flag}"
    return f"{cell.status}: {cell.message[:90]}"


def markdown(cells: list[Cell], doors: list[str], heading: str) -> str:
    models = list(dict.fromkeys(c.model for c in cells))
    by = {(c.model, c.door): c for c in cells}
    family = {m.name: m.family for m in SUITE}
    lines = [heading, "", "| model | family | " + " | ".join(doors) + " |", "|---|---|" + "---|" * len(doors)]
    for m in models:
        row = [cell_text(by[(m, d)]) if (m, d) in by else "-" for d in doors]
        lines.append(f"| {m} | {family.get(m, '')} | " + " | ".join(row) + " |")
    lines.append("")
    for d in doors:
        ran = [c for c in cells if c.door == d and c.status != "skipped"]
        counts = {s: sum(c.status == s for c in ran) for s in ("ok", "fallback", "mismatch", "refused", "error")}
        lines.append(f"- {d}: {len(ran)} models: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return "\n".join(lines) + "\n"


def select(names: str | None, smoke: bool) -> list[RealModel]:
    chosen = [m for m in SUITE if not smoke or m.smoke]
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {m.name for m in SUITE}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise SystemExit(f"error: unknown model(s) {', '.join(missing)}; known: {', '.join(sorted(known))}")
        chosen = [m for m in SUITE if m.name in wanted]
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated suite names (default: all)")
    parser.add_argument("--doors", default="dynamo-tvm,export-tvm,dynamo-triton,export-hls")
    parser.add_argument("--smoke", action="store_true", help="only the fast smoke subset")
    parser.add_argument("--out", type=Path, default=Path("kiln-coverage"))
    parser.add_argument("--update-results", action="store_true", help="write benchmarks/results/coverage.*")
    args = parser.parse_args(argv)
    doors = [d.strip() for d in args.doors.split(",")]
    bad = [d for d in doors if d not in DOORS]
    if bad:
        raise SystemExit(f"error: unknown door(s) {', '.join(bad)}; known: {', '.join(DOORS)}")
    os.environ.setdefault("TRITON_INTERPRET", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from rich.progress import Progress

    entries = select(args.models, args.smoke)
    cells: list[Cell] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("coverage", total=len(entries) * len(doors))
        for entry in entries:
            for door in doors:
                progress.update(task, description=f"{entry.name} / {door}")
                if door == "dynamo-triton" and not entry.triton:
                    cells.append(Cell(entry.name, door, "skipped"))
                else:
                    cells.append(run_cell(entry, door))
                progress.advance(task)
    heading = (f"Real-model coverage: `python -m benchmarks.coverage` · {time.strftime('%Y-%m-%d')} · "
               f"torch {torch.__version__} · {len(entries)} models")
    text = markdown(cells, doors, heading)
    print(text)
    out = RESULTS if args.update_results else args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.md").write_text(text)
    (out / "coverage.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    print(f"wrote {out / 'coverage.md'}")


if __name__ == "__main__":
    main()
