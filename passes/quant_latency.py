"""The quantization ILP's latency term, measured on this host (`quantize{latency=measured}`).

The modeled term (`quant_layers.modeled_seconds`) is a roofline; it cannot know that an
`int8_dyn` layer runs VNNI dot products while an int4 layer decodes to fp32 first, nor
how far each kernel is from its roofline. With `latency=measured`, t[l][j] is the time of
the kernel the TVM backend runs for layer l in format j (`backends/tvm/quant_timing.py`),
summed over the layer's contractions, so a latency budget trades error for real speed.

Measurements are keyed by (host, format, M, K, N) and cached on disk, one JSON file per
host under the user cache dir (`<user cache>/kiln/quant_latency/<cpu>-<vnni>-t<threads>.json`,
or `KILN_QUANT_LATENCY_DIR`), so a model is measured once per host and shapes repeat
across layers and models. A (layer, format) that has no TIR kernel (conv2d weights, auto
fixed point) keeps its modeled time, and the summary counts those.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cost_models.hardware import Hardware
from ir import dtypes
from ir.ops.contraction import LinearOp, MatmulOp
from passes.quant_layers import Layer, modeled_seconds

SOURCES = ("modeled", "measured")
Measure = Callable[[str, int, int, int, int], "tuple[float, str] | None"]


def cache_dir() -> Path:
    env = os.environ.get("KILN_QUANT_LATENCY_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kiln", appauthor=False)) / "quant_latency"


def problems(layer: Layer) -> list[tuple[int, int, int]] | None:
    """(M, K, N) of each contraction reading the weight, or None when one is not a plain
    matmul the quantized kernels run (conv2d, a batched weight)."""
    out = []
    for op in layer.users:
        if not isinstance(op, LinearOp | MatmulOp) or len(layer.shape) != 2:
            return None
        x, y = dtypes.shape_of(op.operands[0].type), dtypes.shape_of(op.results[0].type)
        if len(x) < 2:
            return None
        out.append((math.prod(x[:-1]), int(x[-1]), int(y[-1])))
    return out


class LatencyTable:
    """Measured kernel seconds by (format, M, K, N) for one host, backed by a JSON file."""

    def __init__(self, threads: int = 1, folder: Path | None = None, measure: Measure | None = None,
                 host: str | None = None) -> None:
        if measure is None or host is None:
            from backends.tvm.quant_timing import host_key, kernel_seconds

            measure = measure or (lambda f, m, k, n, t: kernel_seconds(f, m, k, n, threads=t))
            host = host or host_key(threads)
        self.threads, self.measure, self.host = threads, measure, host
        self.path = (folder or cache_dir()) / f"{host}.json"
        self.entries: dict[str, list] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache is re-measured, not trusted
        self.measured = self.hits = 0
        self._dirty = False

    def seconds(self, fmt: str, m: int, k: int, n: int) -> float | None:
        key = f"{fmt}|{m}|{k}|{n}"
        if key in self.entries:
            self.hits += 1
            value = self.entries[key][0]
            return None if value is None else float(value)
        result = self.measure(fmt, m, k, n, self.threads)
        self.measured += 1
        self.entries[key] = [None, "no TIR kernel"] if result is None else [result[0], result[1]]
        self._dirty = True
        return None if result is None else float(result[0])

    def save(self) -> None:
        if self._dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries, indent=0, sort_keys=True))
            tmp.replace(self.path)
            self._dirty = False


def latency_matrix(layers: Sequence[Layer], formats: Sequence[Sequence[str]], mode: str, hw: Hardware,
                   source: str, table: LatencyTable | None = None) -> tuple[list[list[float]], dict[str, str | int]]:
    """t[l][j] in seconds and a summary (`latency_source`, counts) for the decision;
    `formats[l]` is layer l's options (`quant_decide._runs_as`)."""
    if source not in SOURCES:
        raise ValueError(f"quantize: latency must be one of {', '.join(SOURCES)}, not {source!r}")
    modeled = [[modeled_seconds(layer, f, mode, hw) for f in fl] for layer, fl in zip(layers, formats)]
    if source == "modeled":
        return modeled, {"latency_source": "modeled"}
    table = table or LatencyTable()
    out, fallback = [], 0
    for layer, row, fl in zip(layers, modeled, formats):
        shapes = problems(layer)
        times = []
        for f, model in zip(fl, row):
            parts = [table.seconds(f, *s) for s in shapes] if shapes is not None else [None]
            if any(p is None for p in parts):
                fallback += 1
                times.append(model)
            else:
                times.append(sum(parts))
        out.append(times)
    table.save()
    info: dict[str, str | int] = {
        "latency_source": "measured", "latency_host": table.host, "latency_cache": str(table.path),
        "latency_kernels_measured": table.measured, "latency_cache_hits": table.hits,
        "latency_modeled_entries": fallback,
    }
    return out, info
