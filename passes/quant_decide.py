"""From layers and their profiles to a decision: candidates, budget, solve, attributes.

The profile of a layer is what was measured with the weights at hand (`quantize_program`
writes it; IR text may carry it): a `quant_profile` dictionary on the layer's first
contraction with `source`, `weight_absmax`, `act_absmax` and `sensitivity` (format ->
value). Without profiles on any layer the pass uses the Gaussian prior
(`quant_sensitivity.prior`) and says so.

The decision is written as a `quant` dictionary on every contraction of a decided layer
(see `QUANT_ATTR_DOC`) and a flat `kiln.quantization` summary on the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.dialects.builtin import DictionaryAttr, FloatAttr, IntegerAttr, StringAttr, f64, i64

from cost_models.hardware import get_hardware
from ir.attrs import from_attr, to_attr
from ir.quant import get_format
from passes.quant_apply import LayerQuant, act_plan
from passes.quant_latency import latency_matrix
from passes.quant_layers import Layer
from passes.quant_sensitivity import prior
from passes.quant_solver import Problem, Solution, solve_greedy, solve_ilp

QUANT_ATTR_DOC = """`quant` on each decided contraction (kiln.linear / kiln.conv2d / kiln.matmul):
  format      registered format chosen for the weight (e.g. "int4_g64", "mxfp4", "fixed8")
  storage     concrete format of the stored codes (= format, or e.g. "fixed<8,-1,AP_RND_CONV,AP_SAT>")
  weight      the weight parameter's name (before materialization)
  axis        reduction axis of the weight's row view; view_shape is that view's shape
  bytes       exact bytes of packed codes + scales; fp32_bytes the original; bits per weight
  sensitivity the measured (or proxy / prior) output change; latency_us the modeled time
  (or, with `latency=measured`, the host's measured kernel times: `passes/quant_latency.py`)
  mode        "weight-only" | "weight-activation"
  uniform_format, uniform_bytes, uniform_sensitivity: the layer under the uniform baseline
              (the summary's `baseline_uniform`: least summed sensitivity within the budget)
  act_format  concrete activation format (weight-activation mode only), act_axis its axis,
              act_scale the static per-tensor scale from calibration (absent: dynamic)"""


@dataclass
class Decision:
    plans: dict[str, LayerQuant]
    problem: Problem
    solution: Solution
    greedy: Solution
    source: str
    mode: str = "weight-only"
    act_format: str = ""
    profiles: dict[str, dict | None] = field(default_factory=dict)
    summary: dict[str, float | int | str] = field(default_factory=dict)

    def formats(self) -> list[str]:
        return self.problem.formats(self.solution.choice)

    def plan(self, weight: str, fmt: str) -> LayerQuant:
        """How layer `weight` is stored and fed in format `fmt` (any candidate, chosen or not)."""
        p = self.profiles.get(weight)
        storage = get_format(fmt).resolve(p["weight_absmax"]).name if p else fmt
        act, scale = act_plan(fmt, self.mode, p.get("act_absmax") if p else None, self.act_format)
        return LayerQuant(fmt, storage, act, scale)

    def plans_for(self, choice: list[int]) -> dict[str, LayerQuant]:
        return {w: self.plan(w, f) for w, f in zip(self.problem.layers, self.problem.formats(choice))}


def read_profile(layer: Layer) -> dict | None:
    attr = layer.users[0].attributes.get("quant_profile")
    if not isinstance(attr, DictionaryAttr):
        return None
    out = {k: from_attr(v) for k, v in attr.data.items() if k != "sensitivity"}
    sens = attr.data.get("sensitivity")
    out["sensitivity"] = {k: from_attr(v) for k, v in sens.data.items()} if isinstance(sens, DictionaryAttr) else {}
    return out


def write_profile(layer: Layer, source: str, sensitivity: dict[str, float], weight_absmax: float,
                  act_absmax: float | None) -> None:
    data = {
        "source": StringAttr(source),
        "weight_absmax": FloatAttr(float(weight_absmax), f64),
        "sensitivity": DictionaryAttr({k: FloatAttr(float(v), f64) for k, v in sensitivity.items()}),
    }
    if act_absmax is not None:
        data["act_absmax"] = FloatAttr(float(act_absmax), f64)
    for op in layer.users:
        op.attributes["quant_profile"] = DictionaryAttr(data)


def budget_of(layers: Sequence[Layer], budget_bytes: int, avg_bits: float) -> int:
    """The byte budget from the options; neither given means the size of uniform int8."""
    numel = sum(layer.numel for layer in layers)
    limits = []
    if budget_bytes > 0:
        limits.append(int(budget_bytes))
    if avg_bits > 0:
        limits.append(math.floor(avg_bits * numel / 8))
    return min(limits) if limits else sum(layer.nbytes("int8") for layer in layers)


def decide(layers: Sequence[Layer], formats: Sequence[str], budget: int, mode: str, solver: str,
           time_limit: float, hardware: str = "cpu", latency_budget_us: float = 0.0,
           act_format: str = "", latency_source: str = "modeled", latency_table=None) -> Decision:
    """Build the problem from the layers' profiles, solve it, and describe the result."""
    for f in formats:
        get_format(f)  # unknown names fail here, naming the format
    profiles = [read_profile(layer) for layer in layers]
    if any(p is None for p in profiles) and not all(p is None for p in profiles):
        missing = [layer.weight for layer, p in zip(layers, profiles) if p is None]
        raise ValueError(f"quantize: layers {missing} have no quant_profile while others do; profile all or none")
    options = [[_runs_as(f, layer) for f in formats] for layer in layers]
    if profiles and profiles[0] is not None:
        source = str(profiles[0].get("source", "measured"))
        cost = []
        for layer, p in zip(layers, profiles):
            absent = [f for f in formats if f not in p["sensitivity"]]
            if absent:
                raise ValueError(f"quantize: weight {layer.weight} has no sensitivity for {absent}; "
                                 f"profiled formats: {sorted(p['sensitivity'])}")
            cost.append([float(p["sensitivity"][f]) for f in formats])
    else:
        source, cost = "prior", prior(layers, options)
    hw = get_hardware(hardware)
    nbytes = [[layer.nbytes(f) for f in opts] for layer, opts in zip(layers, options)]
    latency, latency_info = latency_matrix(layers, options, mode, hw, latency_source, latency_table)
    lat_budget = latency_budget_us * 1e-6 if latency_budget_us > 0 else None
    problem = Problem([layer.weight for layer in layers], options, cost, nbytes, budget, latency, lat_budget)
    greedy = solve_greedy(problem)
    solution = solve_ilp(problem, time_limit) if solver == "ilp" else greedy
    decision = Decision({}, problem, solution, greedy, source, mode, act_format,
                        {layer.weight: p for layer, p in zip(layers, profiles)})
    decision.plans = decision.plans_for(solution.choice)
    decision.summary = {**_summary(decision, layers, formats, mode, solver), **latency_info}
    return decision


# W8A8-dynamic formats (`ir.quant.registry.DYNAMIC_ACT`) and what they become on a layer
# their kernel does not take: the same int8 weights, weight-only. Their int8 dot-product
# kernel (`backends/tvm/quant_vnni.py`) runs linears and `x @ W` with a 2-d W; on a
# convolution or stacked expert weights the activation's quantize pair would run as its own
# ops around a weight-only kernel (the zoo cnn took 7.5x and moe 8.6x fp32's time so).
_WEIGHT_ONLY = {"int8_dyn": "int8"}


def _runs_as(fmt: str, layer: Layer) -> str:
    """The format a layer gets when `fmt` is asked for (see `_WEIGHT_ONLY`); the layer's
    sensitivity stays the asked format's, an upper bound of the weight-only one's."""
    two_d = layer.kind == "linear" or (layer.kind == "matmul" and len(layer.shape) == 2)
    return _WEIGHT_ONLY.get(fmt, fmt) if not two_d else fmt


def _summary(d: Decision, layers: Sequence[Layer], formats: Sequence[str], mode: str, solver: str,
             ) -> dict[str, float | int | str]:
    """Columns are named by the format asked for (`formats`), whatever a layer runs it as."""
    p, s, g = d.problem, d.solution, d.greedy
    fp32 = sum(layer.fp32_bytes for layer in layers)
    numel = max(sum(layer.numel for layer in layers), 1)
    out: dict[str, float | int | str] = {
        "solver": solver, "status": s.status, "mode": mode, "sensitivity": d.source,
        "layers": len(layers), "budget_bytes": p.budget, "bytes_fp32": fp32,
        "bytes": p.bytes_of(s.choice), "avg_bits": 8 * p.bytes_of(s.choice) / numel,
        "objective": p.cost_of(s.choice), "latency_us": p.latency_of(s.choice) * 1e6,
        "bytes_greedy": p.bytes_of(g.choice), "objective_greedy": p.cost_of(g.choice),
        "latency_us_greedy": p.latency_of(g.choice) * 1e6, "solve_seconds": s.seconds,
    }
    if p.latency_budget is not None:
        out["latency_budget_us"] = p.latency_budget * 1e6
    for k, v in s.info.items():
        out[k] = v
    counts: dict[str, int] = {}
    for f in d.formats():
        counts[f] = counts.get(f, 0) + 1
    out["formats"] = ",".join(f"{f}:{n}" for f, n in sorted(counts.items()))
    if p.layers:
        for j, f in enumerate(formats):
            out[f"uniform_{f}_bytes"] = sum(p.nbytes[l][j] for l in range(len(p.layers)))
            out[f"uniform_{f}_objective"] = sum(p.cost[l][j] for l in range(len(p.layers)))
        base = uniform_baseline(p)
        out["baseline_uniform"] = formats[base]
        out["baseline_bytes"] = p.bytes_of([base] * len(p.layers))
        out["baseline_objective"] = p.cost_of([base] * len(p.layers))
    return out


def uniform_baseline(p: Problem) -> int:
    """The uniform format the choice is judged against, as an option index: the one of
    least summed sensitivity within the byte budget (what a user picks without a solver),
    or the smallest when none fits."""
    n = len(p.layers)
    fits = [j for j in range(len(p.options[0])) if p.bytes_of([j] * n) <= p.budget]
    if fits:
        return min(fits, key=lambda j: (p.cost_of([j] * n), p.bytes_of([j] * n)))
    return min(range(len(p.options[0])), key=lambda j: p.bytes_of([j] * n))


def write_decision(layers: Sequence[Layer], d: Decision, mode: str) -> None:
    p, choice = d.problem, d.solution.choice
    base = uniform_baseline(p) if layers else 0
    for l, layer in enumerate(layers):
        plan = d.plans[layer.weight]
        j = choice[l]
        data = {
            "format": StringAttr(plan.format),
            "storage": StringAttr(plan.storage),
            "weight": StringAttr(layer.weight),
            "axis": IntegerAttr(layer.axis, i64),
            "view_shape": to_attr(layer.view_shape),
            "bytes": IntegerAttr(p.nbytes[l][j], i64),
            "fp32_bytes": IntegerAttr(layer.fp32_bytes, i64),
            "bits": FloatAttr(8 * p.nbytes[l][j] / layer.numel, f64),
            "sensitivity": FloatAttr(float(p.cost[l][j]), f64),
            "latency_us": FloatAttr(p.latency[l][j] * 1e6 if p.latency else 0.0, f64),
            "mode": StringAttr(mode),
            # the same layer under the summary's `baseline_uniform` format
            "uniform_format": StringAttr(p.options[l][base]),
            "uniform_bytes": IntegerAttr(p.nbytes[l][base], i64),
            "uniform_sensitivity": FloatAttr(float(p.cost[l][base]), f64),
        }
        if plan.act_format is not None:
            data["act_format"] = StringAttr(plan.act_format)
            data["act_axis"] = IntegerAttr(layer.act_axis, i64)
            if plan.act_scale is not None:
                data["act_scale"] = FloatAttr(plan.act_scale, f64)
        for op in layer.users:
            op.attributes["quant"] = DictionaryAttr(data)


def summary_attr(summary: dict[str, float | int | str]) -> DictionaryAttr:
    def attr(v):
        if isinstance(v, str):
            return StringAttr(v)
        if isinstance(v, bool):
            return IntegerAttr(int(v), i64)
        if isinstance(v, int):
            return IntegerAttr(v, i64)
        return FloatAttr(float(v), f64)

    return DictionaryAttr({k: attr(v) for k, v in summary.items()})

