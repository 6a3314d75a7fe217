"""`KILN_REPORT=1`: torch.compile prints, on stderr, the report `kiln compile` prints.

`torch.compile(model, backend="kiln")` is quiet by default, as a library should be: each
compiled Dynamo graph is logged at INFO on the `compiler.torch_backend` logger, the whole
report dict riding on the record as its `kiln_report` attribute (so an application can
route or collect it with ordinary logging). Users who just want to see what Kiln did set
`KILN_REPORT=1`; the backend's entry reads the variable (the one place torch.compile reads
the environment) and calls `install_report_printer`, which adds a handler that prints each
report as the CLI's table. Installing twice adds one handler.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

LOGGER = "compiler.torch_backend"
_FALSE = ("", "0", "false", "no", "off")


class ReportPrinter(logging.Handler):
    """Prints the `kiln_report` a log record carries as `kiln compile`'s table (stderr)."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.graphs = 0

    def emit(self, record: logging.LogRecord) -> None:
        report = getattr(record, "kiln_report", None)
        if not isinstance(report, dict):
            return
        try:
            from rich.console import Console

            from compiler.commands.compile_cmd import print_report

            self.graphs += 1
            console = Console(file=self.stream or sys.stderr, soft_wrap=False)
            print_report(report, console, title=f"kiln: torch.compile graph {self.graphs} --target "
                                                f"{report.get('target', '?')}")
        except Exception:  # noqa: BLE001 - printing must never break the user's model
            self.handleError(record)


def install_report_printer(setting: str | None, stream: Any = None) -> ReportPrinter | None:
    """With a true `setting` (KILN_REPORT's value), print every compiled graph's report;
    returns the handler, or None when the setting is off."""
    if (setting or "").strip().lower() in _FALSE:
        return None
    logger = logging.getLogger(LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, ReportPrinter):
            return handler
    handler = ReportPrinter(stream)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the report is logged at INFO
    return handler
