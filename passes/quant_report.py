"""What `quantize_program` reports: the choice per layer and how it compares.

The comparisons are measured, not predicted: each assignment (the ILP's, greedy's, every
uniform format's, and the ILP's at the byte size of every uniform format) is run on the
calibration batches (and the hold-out batches when given) and its output compared with
fp32. The error is the relative L2 error of all float outputs,
||y_q - y|| / ||y||, i.e. the square root of the relative MSE the sensitivities add up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from passes.quant_apply import LayerQuant, QuantRunner, output_error
from passes.quant_decide import Decision
from passes.quant_layers import Layer

if TYPE_CHECKING:
    from passes.quantization import QuantizePass


@dataclass
class QuantReport:
    layers: list[dict[str, Any]]
    sensitivity: str
    permuted_sites: int
    skipped: dict[str, str]
    budget_bytes: int
    bytes: int
    bytes_fp32: int
    status: str
    error: float = math.nan
    holdout_error: float | None = None
    greedy_error: float | None = None
    greedy_holdout_error: float | None = None
    greedy_bytes: int | None = None
    uniform: list[dict[str, Any]] = field(default_factory=list)
    versus: list[dict[str, Any]] = field(default_factory=list)
    materialized: int = 0
    exact: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, d: Decision, layers: Sequence[Layer], skipped: dict[str, str], source: str, permuted: int) -> QuantReport:
        p, choice = d.problem, d.solution.choice
        rows = []
        for l, layer in enumerate(layers):
            plan = d.plans[layer.weight]
            j = choice[l]
            rows.append({
                "weight": layer.weight, "kind": layer.kind, "shape": list(layer.shape),
                "format": plan.format, "storage": plan.storage, "act_format": plan.act_format,
                "bytes": p.nbytes[l][j], "fp32_bytes": layer.fp32_bytes,
                "bits": 8 * p.nbytes[l][j] / layer.numel, "sensitivity": p.cost[l][j],
                "latency_us": p.latency[l][j] * 1e6 if p.latency else 0.0,
            })
        return cls(rows, source, permuted, skipped, p.budget, p.bytes_of(choice),
                   sum(layer.fp32_bytes for layer in layers), d.solution.status,
                   greedy_bytes=p.bytes_of(d.greedy.choice))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def table(self) -> str:
        """The per-layer choice and the comparisons as plain-text tables."""
        lines = [f"sensitivity: {self.sensitivity}; budget {self.budget_bytes} B; chosen {self.bytes} B "
                 f"(fp32 {self.bytes_fp32} B); status {self.status}; error {self.error:.4%}"
                 + (f"; hold-out {self.holdout_error:.4%}" if self.holdout_error is not None else "")
                 + (f"; greedy {self.greedy_error:.4%} at {self.greedy_bytes} B" if self.greedy_error is not None else "")]
        lines.append(f"{'weight':40s} {'format':12s} {'bits':>6s} {'bytes':>9s} {'sens':>10s} {'lat us':>8s}")
        for r in self.layers:
            lines.append(f"{r['weight'][:40]:40s} {r['format']:12s} {r['bits']:6.3f} {r['bytes']:9d} "
                         f"{r['sensitivity']:10.3e} {r['latency_us']:8.2f}")
        if self.versus:
            lines.append(f"{'budget = uniform':18s} {'bytes':>9s} {'uniform err':>12s} {'best uniform <=':>18s} "
                         f"{'ilp err':>10s} {'greedy err':>10s} {'ilp wins':>8s}")
            for v in self.versus:
                lines.append(f"{v['uniform']:18s} {v['budget']:9d} {v['uniform_error']:12.4%} "
                             f"{v['best_uniform']:>9s} {v['best_uniform_error']:8.4%} {v['ilp_error']:10.4%} "
                             f"{v['greedy_error']:10.4%} {v['ilp_wins']!s:>8s}")
        return "\n".join(lines)


def evaluate(runner: QuantRunner, plans: dict[str, LayerQuant], batches: Sequence[Sequence[torch.Tensor]],
             refs: Sequence[Sequence[torch.Tensor]]) -> tuple[float, list[list[torch.Tensor]]]:
    """(relative L2 output error, outputs) of the program with `plans` applied."""
    outs = [runner.run(b, plans) for b in batches]
    return math.sqrt(output_error(refs, outs, "mse")), outs


Batches = Sequence[Sequence[torch.Tensor]]


def compare(report: QuantReport, the_pass: QuantizePass, runner: QuantRunner, layers: Sequence[Layer],
            batches: Batches, refs: Batches, holdout: Batches | None = None,
            holdout_refs: Batches | None = None) -> None:
    """Fill greedy's error, each uniform format's, and the ILP's at each uniform size
    (on the hold-out batches too, when given).

    The best uniform format under a budget is picked by its calibration error, as the ILP
    and greedy pick with calibration data only; the hold-out columns then judge all three
    on inputs none of them saw (`ilp_wins_holdout`)."""
    base = the_pass.decide(layers)
    report.greedy_error = _error_of(base, base.greedy.choice, runner, batches, refs)
    if holdout:
        report.greedy_holdout_error = _error_of(base, base.greedy.choice, runner, holdout, holdout_refs)
    numel = max(sum(layer.numel for layer in layers), 1)
    uniform = []
    for j, fmt in enumerate(the_pass.formats):
        choice = [j] * len(layers)
        row = {"format": fmt, "bytes": base.problem.bytes_of(choice),
               "avg_bits": 8 * base.problem.bytes_of(choice) / numel,
               "error": _error_of(base, choice, runner, batches, refs)}
        if holdout:
            row["holdout_error"] = _error_of(base, choice, runner, holdout, holdout_refs)
        uniform.append(row)
    report.uniform = uniform
    for u in uniform:
        d = the_pass.decide(layers, budget=u["bytes"])
        ilp = _error_of(d, d.solution.choice, runner, batches, refs)
        extra = {}
        fits = [v for v in uniform if v["bytes"] <= u["bytes"]]
        best = min(fits, key=lambda v: v["error"])
        if holdout:
            ilp_hold = _error_of(d, d.solution.choice, runner, holdout, holdout_refs)
            extra = {"ilp_holdout_error": ilp_hold, "best_uniform_holdout_error": best["holdout_error"],
                     "greedy_holdout_error": _error_of(d, d.greedy.choice, runner, holdout, holdout_refs),
                     "ilp_wins_holdout": ilp_hold < best["holdout_error"]}
        report.versus.append({
            "uniform": u["format"], "budget": u["bytes"], "uniform_error": u["error"],
            "best_uniform": best["format"], "best_uniform_error": best["error"],
            "ilp_error": ilp, "ilp_bytes": d.problem.bytes_of(d.solution.choice),
            "greedy_error": _error_of(d, d.greedy.choice, runner, batches, refs),
            "ilp_formats": d.summary.get("formats", ""), "ilp_wins": ilp < best["error"], **extra,
        })


def _error_of(d: Decision, choice: list[int], runner: QuantRunner, batches: Batches, refs: Batches) -> float:
    return evaluate(runner, d.plans_for(choice), batches, refs)[0]
