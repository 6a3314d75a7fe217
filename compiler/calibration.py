"""Quantization inside a compile: the step between a pipeline and the weights.

A pass sees only the IR, but quantization needs the weights and example inputs (to
calibrate, to measure sensitivity, to pack). `run_pipeline_quantized` is what the compile
driver calls instead of `passes.run_pipeline` when it has the program's params and the
example inputs: passes before `quantize` run as usual; at `quantize{...}` it calls
`passes.quantization.quantize_program` with that pass's options (calibrating on the
example inputs, or on `calibration` batches the user gave), which runs the pass and
materializes packed weights; the passes after it then see the quantized IR. A pipeline
without `quantize` runs exactly as `run_pipeline` would.

Example inputs for a partition are the values that reach it; the driver passes the
user's example inputs when the partition is the whole model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from ir.program import Program
from passes import PassTiming, parse_pipeline, run_pipeline
from passes.pipeline import DumpIR
from passes.quant_report import QuantReport
from passes.quantization import QuantizeOptions, QuantizePass, quantize_program


def run_pipeline_quantized(
    program: Program,
    pipeline: str,
    example_inputs: Sequence[torch.Tensor],
    calibration: Sequence[Sequence[torch.Tensor]] | None = None,
    options: QuantizeOptions | None = None,
    *,
    verify: bool = False,
    dump_ir: DumpIR | None = None,
) -> tuple[list[PassTiming], QuantReport | None]:
    """Run `pipeline` on `program`, doing `quantize` with the weights (see the module doc).

    `options` sets what the pass text cannot (sensitivity source, metric, permutation);
    the options written in the pipeline override its pass fields.
    """
    passes = parse_pipeline(pipeline)
    timings: list[PassTiming] = []
    report = None
    pending = []
    for p in passes:
        if not isinstance(p, QuantizePass):
            pending.append(p)
            continue
        timings += run_pipeline(program.module, pending, verify=verify, dump_ir=dump_ir)
        pending = []
        start = time.perf_counter()
        opts = replace(options or QuantizeOptions(), **_pass_fields(p))
        report = quantize_program(program, example_inputs, opts, calibration=calibration)
        timings.append(PassTiming("quantize", time.perf_counter() - start, "quantize"))
        if dump_ir is not None:
            dump_ir("quantize", program.text())
    timings += run_pipeline(program.module, pending, verify=verify, dump_ir=dump_ir)
    return timings, report


def _pass_fields(p: QuantizePass) -> dict:
    from dataclasses import fields

    return {f.name: getattr(p, f.name) for f in fields(p) if f.init}
