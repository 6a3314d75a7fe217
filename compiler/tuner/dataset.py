"""Every measurement the tuner makes, kept as training data for the learned cost model.

The cache service keeps only the best configuration of a kernel; a ranking model needs
the others too (what was slower, and by how much). So each measurement, good or failed,
is appended as one JSON line to `records.jsonl` in the tuner's work directory, with the
kernel's features, so training never needs the IR again. Appends are single `write`
calls of one line; a torn last line (a killed tuner) is skipped on reading.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cost_models.learned import Sample


@dataclass(frozen=True)
class TrainingSet:
    path: Path

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, sort_keys=True, allow_nan=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a killed writer
        return out

    def samples(self, target: str | None = None) -> list[Sample]:
        """The successful measurements, one sample per (kernel, config), latest wins."""
        latest: dict[tuple[str, str], Sample] = {}
        for row in self.rows():
            latency = row.get("latency_s")
            if not isinstance(latency, (int, float)) or not math.isfinite(latency) or latency <= 0:
                continue
            if target is not None and row.get("target") != target:
                continue
            config = row.get("config") or {}
            ident = json.dumps(config, sort_keys=True)
            latest[(row["key"], ident)] = Sample(
                row["key"], row["features"], config, float(latency), row.get("workload", "")
            )
        return list(latest.values())
