"""Routing traces: which experts each token chose in each MoE layer, read, checked, written.

A placement is only as good as the routing it was planned on, so traces are data with a
fixed, documented format (JSON, `kind = "kiln.expert_trace"`, version 1):

    {"kind": "kiln.expert_trace", "version": 1,
     "source": "recorded" | "generated", "model": "<what produced it>",
     "layers": L, "experts": E, "top_k": K, "hidden": H | null, "params": {...},
     "calls": [{"tokens": T, "routing": [[[e_0, ..., e_K-1] per token] per layer],
                "weights": [[[w_0, ...]]] (optional)}]}

Each call is one forward pass (its tokens are split over data-parallel ranks in order);
choice 0 is the token's top-1 expert. Every check raises `ExpertsError` with one line
naming the problem, because a trace from the wrong model silently gives a useless plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from passes.registry import PipelineError

KIND = "kiln.expert_trace"
VERSION = 1


class ExpertsError(PipelineError):
    """Bad trace, options or model for expert placement; the message is one line.

    A `PipelineError` (a ValueError), so `kiln opt` and `kiln compile` print it as the one
    line they print for a bad pipeline, instead of a traceback.
    """


@dataclass
class ExpertTrace:
    """Routing of every call: `calls[c]` is an int array [layers, tokens, top_k]."""

    layers: int
    experts: int
    top_k: int
    calls: list[np.ndarray]
    source: str = "recorded"
    model: str = ""
    hidden: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    weights: list[np.ndarray] | None = None

    @property
    def tokens(self) -> int:
        return int(sum(c.shape[1] for c in self.calls))

    def split(self, fraction: float = 0.5) -> tuple[ExpertTrace, ExpertTrace]:
        """(calibration, held-out) by calls, so held-out tokens were never planned on."""
        if len(self.calls) < 2:
            raise ExpertsError(f"trace {self.model!r} has {len(self.calls)} call(s); need >= 2 to hold some out")
        cut = min(len(self.calls) - 1, max(1, round(len(self.calls) * fraction)))
        return self._with(self.calls[:cut]), self._with(self.calls[cut:])

    def _with(self, calls: list[np.ndarray]) -> ExpertTrace:
        return ExpertTrace(self.layers, self.experts, self.top_k, calls, self.source, self.model, self.hidden,
                           dict(self.params))

    def to_json(self) -> dict[str, Any]:
        calls = []
        for i, c in enumerate(self.calls):
            entry: dict[str, Any] = {"tokens": int(c.shape[1]), "routing": c.tolist()}
            if self.weights is not None:
                entry["weights"] = np.round(self.weights[i], 5).tolist()
            calls.append(entry)
        return {"kind": KIND, "version": VERSION, "source": self.source, "model": self.model,
                "layers": self.layers, "experts": self.experts, "top_k": self.top_k, "hidden": self.hidden,
                "params": self.params, "calls": calls}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))


def from_json(data: Any, where: str = "trace") -> ExpertTrace:
    """Validate and convert; every problem is one `ExpertsError` line naming `where`."""
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ExpertsError(f"{where}: not a Kiln expert trace (expected kind {KIND!r})")
    if data.get("version") != VERSION:
        raise ExpertsError(f"{where}: trace version {data.get('version')!r} is not {VERSION}")
    try:
        layers, experts, top_k = int(data["layers"]), int(data["experts"]), int(data["top_k"])
    except (KeyError, TypeError, ValueError):
        raise ExpertsError(f"{where}: needs integer 'layers', 'experts' and 'top_k'") from None
    if layers < 1 or experts < 1 or not 1 <= top_k <= experts:
        raise ExpertsError(f"{where}: layers={layers}, experts={experts}, top_k={top_k} is not a valid MoE shape")
    raw = data.get("calls")
    if not isinstance(raw, list) or not raw:
        raise ExpertsError(f"{where}: empty trace (no calls recorded)")
    calls: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for i, call in enumerate(raw):
        try:
            routing = np.asarray(call["routing"], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            raise ExpertsError(f"{where}: call {i} has no integer 'routing' array") from None
        if routing.size == 0:
            raise ExpertsError(f"{where}: empty trace (call {i} has no tokens)")
        if routing.ndim != 3 or routing.shape[0] != layers or routing.shape[2] != top_k:
            raise ExpertsError(f"{where}: call {i} routing has shape {list(routing.shape)}, "
                               f"expected [{layers}, tokens, {top_k}]")
        if routing.min() < 0 or routing.max() >= experts:
            raise ExpertsError(f"{where}: call {i} names expert {int(routing.max())} but the trace has {experts}")
        calls.append(routing)
        if "weights" in call:
            weights.append(np.asarray(call["weights"], dtype=np.float64))
    hidden = data.get("hidden")
    return ExpertTrace(layers, experts, top_k, calls, str(data.get("source", "recorded")), str(data.get("model", "")),
                       None if hidden is None else int(hidden), dict(data.get("params") or {}),
                       weights if len(weights) == len(calls) else None)


def load_trace(path: str | Path) -> ExpertTrace:
    p = Path(path)
    if not p.is_file():
        raise ExpertsError(f"trace file {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExpertsError(f"trace file {str(p)!r} is not JSON: {str(err).splitlines()[0]}") from None
    return from_json(data, str(p))


def check_matches(trace: ExpertTrace, layers: int, experts: int, what: str) -> None:
    """A trace recorded on another model (other layer or expert counts) is refused."""
    if trace.layers != layers or trace.experts != experts:
        raise ExpertsError(f"trace {trace.model or '?'!r} has {trace.layers} MoE layers x {trace.experts} experts "
                           f"but {what} has {layers} x {experts}: it was recorded on another model")
