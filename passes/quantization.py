"""`quantize`: choose a format per layer (int8, int4 groups, FP8, MX, BFP, fixed point) by ILP.

Anchor: HAWQ-V3 (integer program over per-layer bit widths under a size / latency budget,
from measured sensitivity). Every layer whose weight is a parameter of a linear, conv2d
or matmul gets one format; the integer program minimizes the summed sensitivity subject
to the total weight bytes (exact, codes plus scales) and optionally the modeled latency;
the greedy marginal-cost heuristic is the baseline and the fallback (`quant_solver.py`).

Why two entry points. A pass sees only the module, and quantization needs the weights
(sensitivity is measured by running the model, fixed point ranges and static activation
scales come from data). So the work is split where the data is:

- `quantize_program(program, example_inputs, options)` is what the compile driver calls
  when a pipeline asks for quantization. It owns everything that needs weights and
  inputs: the outlier channel permutation (`ir.quant.permutation`, fp32-exact), the
  calibration run, the sensitivity table (`quant_sensitivity.py`), written on the IR as
  `quant_profile` attributes; then it runs this pass, measures the true output error of
  the choice against greedy and against every uniform format of equal or smaller size,
  and finally materializes packed weights and `kiln.quantize` / `kiln.dequantize` ops
  (`quant_apply.py`) so the program runs quantized on the interpreter and any backend.
- `QuantizePass` (`quantize{budget-bytes=N avg-bits=4.5 mode=weight-only|weight-activation
  formats=int8,int4_g64 solver=ilp|greedy time-limit=S latency-budget-us=T hardware=cpu
  act-format=NAME latency=modeled|measured}`) is the decision alone: it reads the profiles, solves, and writes
  `quant` attributes on the contractions and the `kiln.quantization` summary on the
  module. On IR without profiles (text from elsewhere) it uses a Gaussian prior and says
  so in the summary's `sensitivity` field, so `kiln opt -p quantize` always works.

The contract for backends (the attributes, the ops, the packed layouts) is described in
`passes/quant_decide.QUANT_ATTR_DOC`, `ir/ops/quant.py` and `ir/quant/packing.py`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from ir.interpreter import run
from ir.program import Program, entry_function
from ir.quant import get_format
from ir.quant.calibration import calibrate
from ir.quant.permutation import find_sites, permute_outliers
from passes.quant_apply import (
    MODES,
    WEIGHT_ACTIVATION,
    QuantRunner,
    layer_plans_from_ir,
    materialize,
)
from passes.quant_decide import (
    Decision,
    budget_of,
    decide,
    summary_attr,
    write_decision,
    write_profile,
)
from passes.quant_latency import SOURCES as LATENCY_SOURCES
from passes.quant_layers import Layer, find_layers
from passes.quant_report import QuantReport, compare, evaluate
from passes.quant_sensitivity import AUTO_MEASURED_LIMIT, SOURCES, measured, proxy
from passes.quant_solver import QuantizationError
from passes.registry import register_pass

SOLVERS = ("ilp", "greedy")
METRICS = ("mse", "kl")
DEFAULT_FORMATS = (
    "int8", "int4_g32", "int4_g64", "int4_g128", "fp8_e4m3", "fp8_e5m2", "mxfp8_e4m3", "mxfp8_e5m2",
    "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "bfp4", "bfp6", "bf16",
)


@register_pass
@dataclass(frozen=True)
class QuantizePass(ModulePass):
    name: ClassVar[str] = "quantize"

    budget_bytes: int = 0
    avg_bits: float = 0.0
    mode: str = "weight-only"
    formats: tuple[str, ...] = ()  # empty: DEFAULT_FORMATS
    solver: str = "ilp"
    time_limit: float = 10.0
    latency_budget_us: float = 0.0
    hardware: str = "cpu"
    act_format: str = ""
    latency: str = "modeled"  # modeled (roofline) | measured (this host's kernel times, cached)

    def __post_init__(self) -> None:
        if self.latency not in LATENCY_SOURCES:
            raise QuantizationError(f"quantize: latency must be one of {', '.join(LATENCY_SOURCES)}, not {self.latency!r}")
        if self.mode not in MODES:
            raise QuantizationError(f"quantize: unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.solver not in SOLVERS:
            raise QuantizationError(f"quantize: unknown solver {self.solver!r}; use one of {', '.join(SOLVERS)}")
        if self.budget_bytes < 0 or self.avg_bits < 0 or self.latency_budget_us < 0:
            raise QuantizationError("quantize: budget-bytes, avg-bits and latency-budget-us must be >= 0")
        if self.time_limit <= 0:
            raise QuantizationError(f"quantize: time-limit must be > 0 seconds, got {self.time_limit}")
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        object.__setattr__(self, "formats", formats or DEFAULT_FORMATS)
        for f in (*formats, *([self.act_format] if self.act_format else [])):
            try:
                get_format(f)
            except ValueError as err:
                raise QuantizationError(f"quantize: {err}") from None

    def decide(self, layers: Sequence[Layer], budget: int | None = None) -> Decision:
        """The decision for `layers` (from their profiles), without writing it."""
        budget = budget_of(layers, self.budget_bytes, self.avg_bits) if budget is None else budget
        return decide(layers, self.formats, budget, self.mode, self.solver, self.time_limit,
                      self.hardware, self.latency_budget_us, self.act_format, self.latency)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        layers, skipped = find_layers(entry_function(op))
        decision = self.decide(layers)
        write_decision(layers, decision, self.mode)
        summary = {**decision.summary, "skipped": len(skipped)}
        op.attributes["kiln.quantization"] = summary_attr(summary)


@dataclass(frozen=True)
class QuantizeOptions:
    """`QuantizePass`'s options plus what only `quantize_program` can do with the weights."""

    budget_bytes: int = 0
    avg_bits: float = 0.0
    mode: str = "weight-only"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    solver: str = "ilp"
    time_limit: float = 10.0
    latency_budget_us: float = 0.0
    hardware: str = "cpu"
    act_format: str = ""
    latency: str = "modeled"
    sensitivity: str = "auto"  # measured | proxy | auto (measured while affordable)
    metric: str = "mse"  # mse | kl (logits)
    permute: bool = True  # fold the outlier channel permutation into the weights first
    compare: bool = True  # measure greedy and uniform formats of equal size too
    materialize: bool = True  # rewrite the IR into packed weights and quant ops
    # torch threads while measuring: the runs are many small ops, where a second thread's
    # fork/join costs more than it gains (and on a shared machine much more); 0 = unchanged.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.sensitivity not in SOURCES or self.sensitivity == "prior":
            raise QuantizationError(f"quantize: sensitivity must be measured, proxy or auto, not {self.sensitivity!r}")
        if self.metric not in METRICS:
            raise QuantizationError(f"quantize: metric must be one of {', '.join(METRICS)}")
        self.make_pass()  # validates the shared options

    def make_pass(self, **changes) -> QuantizePass:
        names = {f.name for f in dataclasses.fields(QuantizePass) if f.init}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return QuantizePass(**{**values, **changes})


def quantize_program(
    program: Program,
    example_inputs: Sequence[torch.Tensor],
    options: QuantizeOptions | None = None,
    calibration: Sequence[Sequence[torch.Tensor]] | None = None,
    holdout: Sequence[Sequence[torch.Tensor]] | None = None,
) -> QuantReport:
    """Decide and apply quantization to `program` in place; see the module docstring.

    `calibration` batches default to `[example_inputs]`; `holdout` batches (optional) are
    only evaluated, to show the error on data the calibration did not see.
    """
    opts = options or QuantizeOptions()
    previous = torch.get_num_threads()
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    try:
        with torch.no_grad():
            return _quantize_program(program, example_inputs, opts, calibration, holdout)
    finally:
        torch.set_num_threads(previous)


def _quantize_program(program, example_inputs, opts: QuantizeOptions, calibration, holdout) -> QuantReport:
    the_pass = opts.make_pass()
    seconds: dict[str, float] = {}
    batches = [tuple(b) for b in calibration] if calibration else [tuple(example_inputs)]
    fn = program.forward
    layers, skipped = find_layers(fn)
    ops = list(fn.body.block.ops)
    index = {op: i for i, op in enumerate(ops)}
    watch = {index[op]: (0, layer.act_axis) for layer in layers for op in layer.users}

    tic = time.perf_counter()
    permuted = 0
    if opts.permute and find_sites(fn):
        act = None
        if opts.mode == WEIGHT_ACTIVATION:
            pre = calibrate(program, batches, watch)
            act = {op.operands[0]: pre.stats[index[op]].channel_absmax for layer in layers for op in layer.users}
        permuted = len(permute_outliers(program, act))
    seconds["permute"] = time.perf_counter() - tic

    formats = the_pass.formats
    n_options = len(layers) * len(formats) * len(batches)
    source = opts.sensitivity if opts.sensitivity != "auto" else (
        "measured" if n_options <= AUTO_MEASURED_LIMIT else "proxy")
    tic = time.perf_counter()
    calib = calibrate(program, batches, watch, keep_samples=source == "proxy")
    seconds["calibrate"] = time.perf_counter() - tic

    tic = time.perf_counter()
    runner = QuantRunner(program, layers)
    options_per_layer = [list(formats) for _ in layers]
    if source == "measured":
        table = measured(runner, layers, options_per_layer, calib, opts.mode, opts.metric, opts.act_format)
        label = f"measured-{opts.metric}"
    else:
        table = proxy(runner, layers, options_per_layer, calib, opts.mode, opts.act_format)
        label = "proxy-local-mse"
    for layer, row in zip(layers, table):
        stats = [calib.stats[index[op]] for op in layer.users]
        write_profile(layer, label, dict(zip(formats, row)), float(program.params[layer.weight].detach().abs().max()),
                      max(s.absmax for s in stats) if stats else None)
    seconds["sensitivity"] = time.perf_counter() - tic

    tic = time.perf_counter()
    decision = the_pass.decide(layers)
    write_decision(layers, decision, opts.mode)
    seconds["solve"] = time.perf_counter() - tic

    tic = time.perf_counter()
    plans = layer_plans_from_ir(layers)
    report = QuantReport.of(decision, layers, skipped, label, permuted)
    refs = calib.outputs
    report.error, chosen_outs = evaluate(runner, plans, batches, refs)
    hold_refs = [runner.trace(b)[0] for b in holdout] if holdout else None
    if holdout:
        report.holdout_error, _ = evaluate(runner, plans, holdout, hold_refs)
    if opts.compare:
        compare(report, the_pass, runner, layers, batches, refs, holdout, hold_refs)
    seconds["compare"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if opts.materialize:
        report.materialized = materialize(program, layers)
        program.module.verify()
        got = [run(program, *b) for b in batches]
        report.exact = all(torch.equal(g, c) for gs, cs in zip(got, chosen_outs) for g, c in zip(gs, cs))
    seconds["materialize"] = time.perf_counter() - tic
    report.seconds = seconds
    summary = {**decision.summary, "skipped": len(skipped), "permuted_sites": permuted,
               "rel_error": report.error}
    if report.greedy_error is not None:
        summary["rel_error_greedy"] = report.greedy_error
    program.module.attributes["kiln.quantization"] = summary_attr(summary)
    report.summary = summary
    return report
