"""`torch.compile(model, backend="kiln")`, registered through the torch_dynamo_backends entry point.

Dynamo hands over an FX graph and example inputs; Kiln compiles it and returns a
callable over the same flat inputs. A graph Kiln cannot capture at all (dynamic shapes,
export failure) runs in eager with a warning: torch.compile must never break a model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch


def kiln_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None):
    from compiler.capture import CaptureError
    from compiler.driver import compile_fx
    from compiler.options import CompileOptions

    opts = CompileOptions.from_mapping(options)
    try:
        compiled = compile_fx(gm, example_inputs, opts)
    except CaptureError as err:
        if opts.strict:
            raise
        warnings.warn(f"kiln: running this graph in eager: {err}", stacklevel=2)
        return gm.forward
    run = compiled.flat

    def forward(*args: Any) -> list[Any]:
        with torch.no_grad():
            return run(*args)

    forward.kiln_report = compiled.report  # type: ignore[attr-defined]
    return forward
