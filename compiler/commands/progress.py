"""A progress line for long commands: which stage `kiln compile` is in, and for how long.

A compile of a real model spends tens of seconds in capture, the pass pipeline, the
backend build and the timing against eager; the line says which one is running. It is
drawn by rich on stderr only when stderr is a terminal (never under --json, in pipes or
CI logs) and disappears when the command ends, before the result table is printed.
The driver reports its stages through `CompileOptions.on_stage`, a plain callback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StageProgress:
    """A spinner, the current stage and the elapsed time; `stage(name)` moves it on."""

    def __init__(self, title: str, console: Any | None, enabled: bool) -> None:
        self.title, self.stages, self._progress, self._task = title, [], None, None
        self._start = time.perf_counter()
        if enabled and console is not None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(title, total=None)

    def stage(self, name: str) -> None:
        self.stages.append((name, time.perf_counter() - self._start))
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.title}: {name}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextmanager
def stage_progress(title: str, console: Any | None, enabled: bool) -> Iterator[StageProgress]:
    progress = StageProgress(title, console, enabled and console is not None and console.is_terminal)
    try:
        yield progress
    finally:
        progress.stop()
