"""`torch.compile(model, backend="kiln")`, registered through the torch_dynamo_backends entry point.

Dynamo hands over an FX graph and example inputs; Kiln compiles it and returns a
callable over the same flat inputs. A graph with symbolic shapes (after a shape change,
or `dynamic=True`) is compiled once per concrete shape (`compiler/shape_specialize.py`).
A graph Kiln cannot capture at all (export failure) runs in eager with a warning:
torch.compile must never break a model.

Dynamo keeps the returned callable to itself, so each compile's report is also logged
(INFO on this module's logger, the dict as the record's `kiln_report` attribute): that
is how a caller or a test sees which ops fell back to eager.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)


def kiln_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None):
    from compiler.options import CompileOptions
    from compiler.shape_specialize import ShapeSpecializing, is_dynamic

    from compiler.report_print import install_report_printer

    install_report_printer(os.environ.get("KILN_REPORT"))  # KILN_REPORT=1: each report on stderr
    options = dict(options or {})
    if "tuning_cache" not in options:  # the one place torch.compile reads the environment
        options["tuning_cache"] = os.environ.get("KILN_CACHE") or None
    opts = CompileOptions.from_mapping(options)
    if is_dynamic(gm, example_inputs):  # a shape changed, or dynamic=True: one compile per shape
        log.info("kiln: Dynamo graph with symbolic shapes: compiling per concrete shape")
        return ShapeSpecializing(gm, lambda g, args: _compile_static(g, args, opts))
    return _compile_static(gm, example_inputs, opts)


def _compile_static(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], opts):
    """Compile for these shapes; a call with other module-state tensors (another instance
    of the same module class, which Dynamo's guards let through) compiles for those."""
    from compiler.state_guard import StateGuarded

    forward, positions = _build(gm, example_inputs, opts)
    if not positions:
        return forward
    guarded = StateGuarded(positions, example_inputs, forward, lambda args: _build(gm, args, opts)[0])
    guarded.kiln_report = getattr(forward, "kiln_report", None)  # type: ignore[attr-defined]
    return guarded


def _build(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], opts):
    from compiler.capture import CaptureError
    from compiler.driver import compile_fx
    from compiler.state_guard import state_positions

    index = opts.report
    if index is not None:  # one page per graph, out.html their index (compiler/report/graphs.py)
        from dataclasses import replace

        from compiler.report.graphs import graph_page, record_graph

        opts = replace(opts, report=graph_page(index))
    try:
        compiled = compile_fx(gm, example_inputs, opts)
    except CaptureError as err:
        if index is not None:
            record_graph(index, opts.report, None, f"ran in eager: {err}")
        if opts.strict:
            raise
        warnings.warn(f"kiln: running this graph in eager: {err}", stacklevel=3)
        return gm.forward, []
    if index is not None:
        record_graph(index, opts.report, compiled.report)
    run = compiled.flat
    needs_no_grad = compiled.needs_no_grad

    def forward(*args: Any) -> list[Any]:
        if not needs_no_grad or not torch.is_grad_enabled():  # skip the context manager (~1.5 us)
            return run(*args)
        with torch.no_grad():
            return run(*args)

    forward.kiln_report = compiled.report  # type: ignore[attr-defined]
    report = compiled.report
    log.info(
        "kiln: compiled a Dynamo graph for %s: %d ops, %d kernels, %d partitions, eager fallbacks: %s",
        opts.target, report["num_ops"], report["num_kernels"], report["num_partitions"],
        ", ".join(f"{f['op']} x{f['count']}" for f in report["fallback_ops"]) or "none",
        extra={"kiln_report": report},
    )
    return forward, state_positions(example_inputs, compiled.input_positions)
