"""Sensitivity of the model to each layer's format: what the ILP minimizes.

Three sources, and the report always says which one was used:

- "measured" (HAWQ's definition, measured rather than estimated): quantize one layer
  alone in one format, run the model on the calibration batches, and take the change
  of the output: relative MSE (sum of squared differences / sum of squares), or, with
  metric "kl", the mean KL divergence of the output softmax (for logits). The run starts
  at the layer (values before it come from the fp32 run), so the cost is layers x formats
  partial forward passes.
- "proxy", for models too large for that: the relative MSE of the layer's own output
  (the weight error times the calibrated activations, ||X dW^T||^2 / ||X W^T||^2, on
  the first calibration batch), without propagating it through the rest of the model.
- "prior", when no weights are at hand (the pass run on IR text): the relative MSE the
  format gives on Gaussian data of the layer's reduction length. It ranks formats
  correctly but treats every layer as equally important.

Relative MSEs from different layers add up (to first order the output noise of
independent errors does), which is what makes the sum a sound ILP objective.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from ir.quant import get_format
from ir.quant.calibration import Calibration
from passes.quant_apply import (
    LayerQuant,
    QuantRunner,
    act_plan,
    fake_act,
    output_error,
    weight_storage,
)
from passes.quant_layers import Layer

SOURCES = ("measured", "proxy", "prior", "auto")
AUTO_MEASURED_LIMIT = 2000  # layers x formats x batches partial runs before "auto" picks proxy


def plan_for(layer: Layer, fmt: str, runner: QuantRunner | None, mode: str, act_absmax: float | None,
             act_override: str = "") -> LayerQuant:
    storage = weight_storage(layer, runner.program.params[layer.weight], fmt) if runner else fmt
    act, scale = act_plan(fmt, mode, act_absmax, act_override)
    return LayerQuant(fmt, storage, act, scale)


def measured(runner: QuantRunner, layers: Sequence[Layer], options: Sequence[Sequence[str]],
             calib: Calibration, mode: str, metric: str, act_override: str = "") -> list[list[float]]:
    """Output change with one layer quantized, per layer per format (see the module doc)."""
    traces = [runner.trace(batch) for batch in calib.batches]
    refs = [out for out, _ in traces]
    table = []
    for layer, formats in zip(layers, options):
        start = runner.first_index(layer)
        absmax = _act_absmax(runner, calib, layer)
        row = []
        for fmt in formats:
            plans = {layer.weight: plan_for(layer, fmt, runner, mode, absmax, act_override)}
            outs = [runner.run(batch, plans, start=start, cache=env) for batch, (_, env) in zip(calib.batches, traces)]
            row.append(output_error(refs, outs, metric))
        table.append(row)
    return table


def proxy(runner: QuantRunner, layers: Sequence[Layer], options: Sequence[Sequence[str]],
          calib: Calibration, mode: str, act_override: str = "") -> list[list[float]]:
    """Relative MSE of each layer's own output (needs calibration with samples kept)."""
    table = []
    for layer, formats in zip(layers, options):
        absmax = _act_absmax(runner, calib, layer)
        row = []
        for fmt in formats:
            plan = plan_for(layer, fmt, runner, mode, absmax, act_override)
            num = den = 0.0
            for op in layer.users:
                samples = calib.stats[runner.index[op]].samples
                if not samples:
                    raise ValueError("proxy sensitivity needs calibrate(..., keep_samples=True)")
                values = list(samples[0])
                with torch.no_grad():
                    ref = op.reference(*values)
                    values[1] = runner.weight(layer, fmt)
                    if plan.act_format is not None:
                        values[0] = fake_act(values[0], plan.act_format, plan.act_scale, layer.act_axis)
                    out = op.reference(*values)
                num += float(((out.double() - ref.double()) ** 2).sum())
                den += float((ref.double() ** 2).sum())
            row.append(num / den if den > 0 else num)
        table.append(row)
    return table


def prior(layers: Sequence[Layer], options: Sequence[Sequence[str]]) -> list[list[float]]:
    """Relative MSE of each format on Gaussian rows of the layer's reduction length."""
    return [[_gaussian_error(fmt, min(layer.k, 4096)) for fmt in formats] for layer, formats in zip(layers, options)]


@functools.cache
def _gaussian_error(fmt: str, k: int) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(max(1, 16384 // k), k, generator=g)
    f = get_format(fmt).resolve(x)
    d = f.dequantize(f.quantize(x))
    return float(((d - x) ** 2).sum() / (x**2).sum())


def _act_absmax(runner: QuantRunner, calib: Calibration, layer: Layer) -> float | None:
    stats = [calib.stats[runner.index[op]] for op in layer.users if runner.index[op] in calib.stats]
    return max(s.absmax for s in stats) if stats else None
