"""`kiln trace-experts FILE.py:factory --samples N [--data FILE.pt] --out trace.json`.

Runs the model eagerly on calibration inputs and records, per call and MoE layer, each
token's top-k experts and weights (`compiler/trace_experts.py`), for the `place-experts`
pass. Inputs come from `--data` (a `torch.save`d list of input tuples, or of tensors for
one-input models) or are drawn like the factory's example inputs (`--samples` of them,
seeded by `--seed`: token ids uniformly in their observed range, floats N(0, 1)).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from compiler.cli import fail


def _load_data(path: str) -> list[tuple[Any, ...]]:
    import torch

    p = Path(path)
    if not p.is_file():
        fail(f"--data file {path!r} does not exist")
    try:
        data = torch.load(p, weights_only=True)
    except Exception as err:  # torch raises many kinds for a non-tensor file
        fail(f"--data {path!r} is not a torch.save file: {type(err).__name__}")
    if isinstance(data, torch.Tensor):
        data = [data]
    if not isinstance(data, (list, tuple)):
        fail(f"--data {path!r} must hold a list of input tuples, got {type(data).__name__}")
    return [tuple(x) if isinstance(x, (list, tuple)) else (x,) for x in data]


def run_trace(model_spec: str, samples: int, data: str | None, out: str, seed: int) -> None:
    from compiler.model_loader import ModelSpecError, load_model
    from compiler.trace_experts import sample_inputs, trace_model
    from passes.experts.trace import ExpertsError

    try:
        model, inputs, name = load_model(model_spec)
    except ModelSpecError as err:
        fail(str(err))
    calls = _load_data(data) if data else sample_inputs(inputs, samples, seed)
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    try:
        # a bar on a terminal only: pipes and CI logs get the one result line
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"tracing {name}", total=len(calls))
            trace = trace_model(model, calls, model_spec, on_call=lambda _: bar.advance(task))
    except ExpertsError as err:
        fail(str(err))
    except Exception as err:  # the user's model failed on these inputs
        fail(f"{name}() model failed on a calibration input: {type(err).__name__}: {str(err).splitlines()[0]}")
    trace.save(out)
    sys.stdout.write(f"wrote {out}: {len(trace.calls)} calls, {trace.tokens} tokens, {trace.layers} MoE layers "
                     f"x {trace.experts} experts, top-{trace.top_k}\n")
