"""`torch.compile(backend="kiln")` is quiet by default; `KILN_REPORT=1` prints the CLI's
report on stderr (issue 9, item 10). Run in a subprocess, as a user's script runs."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

from compiler.report_print import LOGGER, ReportPrinter, install_report_printer

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
x = torch.randn(2, 8)
compiled = torch.compile(model, backend="kiln", options={"target": "eager"})
with torch.no_grad():
    torch.testing.assert_close(compiled(x), model(x))
print("done")
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "KILN_REPORT"}
    full.update(XDG_CACHE_HOME=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=300, check=False)


def test_quiet_by_default_and_report_with_kiln_report(tmp_path: Path) -> None:
    quiet = _run(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "done\n" and "kiln" not in quiet.stderr
    loud = _run(tmp_path, KILN_REPORT="1")
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout == "done\n"  # the report goes to stderr, never into the program's output
    assert "kiln: torch.compile graph 1 --target eager" in loud.stderr
    for row in ("ops", "kernels", "fallback ops", "passes"):
        assert f"│ {row}" in loud.stderr


def test_the_printer_is_installed_once_and_only_when_asked() -> None:
    logger = logging.getLogger(LOGGER)
    before = list(logger.handlers)
    try:
        assert install_report_printer(None) is None and install_report_printer("0") is None
        first = install_report_printer("1")
        assert isinstance(first, ReportPrinter) and install_report_printer("yes") is first
        assert logger.handlers.count(first) == 1
    finally:
        logger.handlers[:] = before


def test_the_printer_prints_user_text_verbatim() -> None:
    out = io.StringIO()
    printer = ReportPrinter(out)
    report = {"target": "tvm", "num_ops": 3, "num_kernels": 2, "num_partitions": 1, "compile_s": 0.5,
              "fallback_ops": [{"op": "aten.weird[/x]", "count": 1}], "passes": []}
    record = logging.LogRecord(LOGGER, logging.INFO, __file__, 1, "compiled", (), None)
    record.kiln_report = report
    printer.emit(record)
    text = out.getvalue()
    assert "aten.weird[/x] x1" in text and "no passes" in text
    assert "eager" not in text.split("--target")[1]  # no latency rows: nothing was timed
