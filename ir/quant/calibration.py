"""Calibration: run a program on sample inputs and record what each layer sees.

For every watched (op index, operand index, axis) it records the activation's max
magnitude (per tensor and per channel along `axis`, the reduction dim) and its mean
square over all calibration batches, plus the fp32 outputs of each batch (the reference
every quantized run is measured against). Static activation scales (int8 and FP8 per
tensor, fixed point integer bits) come from the max magnitudes; the outlier permutation
ranks channels by the per-channel maxima.

The calibration set is the example inputs unless the caller gives batches; it should
look like production data, since ranges outside it will clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from xdsl.ir import Operation

from ir.program import Program
from ir.quant.formats import to_rows
from ir.quant.observe import body_ops, run_traced

Batch = Sequence[torch.Tensor]


@dataclass
class ActivationStats:
    absmax: float = 0.0
    channel_absmax: torch.Tensor | None = None  # (k,) along the watched axis
    sum_sq: float = 0.0
    count: int = 0
    samples: list[list[torch.Tensor]] = field(default_factory=list)  # all operands of the op, first batch, if kept

    @property
    def mean_sq(self) -> float:
        return self.sum_sq / max(self.count, 1)

    def add(self, values: list[torch.Tensor], operand: int, axis: int, keep: bool) -> None:
        x = values[operand].detach().to(torch.float32)
        rows = to_rows(x, axis).abs()
        ch = rows.amax(dim=0) if rows.numel() else torch.zeros(rows.shape[1])
        self.channel_absmax = ch if self.channel_absmax is None else torch.maximum(self.channel_absmax, ch)
        self.absmax = max(self.absmax, float(ch.max()) if ch.numel() else 0.0)
        self.sum_sq += float((x.double() ** 2).sum())
        self.count += x.numel()
        if keep:
            self.samples.append(list(values))


@dataclass
class Calibration:
    """Per watched op index: its activation stats; and the fp32 outputs per batch."""

    stats: dict[int, ActivationStats]
    outputs: list[list[torch.Tensor]]
    batches: list[Batch]


def calibrate(
    program: Program,
    batches: Sequence[Batch],
    watch: dict[int, tuple[int, int]],
    keep_samples: bool = False,
) -> Calibration:
    """Run every batch; `watch` maps op index -> (operand index, axis) to record."""
    if not batches:
        raise ValueError("calibration needs at least one batch of inputs")
    stats = {i: ActivationStats() for i in watch}
    ops = body_ops(program.forward)

    def hook(index: int, op: Operation, values: list[torch.Tensor]) -> list[torch.Tensor]:
        if index in watch:
            operand, axis = watch[index]
            stats[index].add(values, operand, axis, keep_samples and not stats[index].samples)
        return values

    outputs = []
    for batch in batches:
        out, _ = run_traced(program.forward, list(batch), program.params, hook, ops=ops)
        outputs.append(out)
    return Calibration(stats, outputs, [tuple(b) for b in batches])
