"""`hls-reuse`: choose each HLS layer's reuse factor by ILP under the FPGA part's budget.

A reuse factor R says how many multiplications share one multiplier: a layer with M
multiplications per row uses M / R multipliers and takes R cycles per row. hls4ml makes
the user pick one R for the whole model by hand; this pass picks one per layer.

The integer program (`cost_models.fpga` costs every candidate):

    x[l][r] in {0, 1}            layer l uses reuse factor r (r divides M_l)
    sum_r x[l][r] = 1            for every multiply-accumulate layer l
    sum_lr dsp[l][r]  x[l][r] <= DSP budget  - DSPs of the fixed layers
    sum_lr bram[l][r] x[l][r] <= BRAM budget - BRAMs of the fixed layers and buffers
    sum_lr lut[l][r]  x[l][r] <= LUT budget  - LUTs of the fixed layers
    minimize   sum_lr latency[l][r] x[l][r]                     (objective=latency), or
    minimize   T  s.t.  T >= sum_r rows_l * r * x[l][r] for all l  (objective=ii), then the
               latency with T fixed at its optimum (a second solve, so ties are broken exactly)

Fixed layers (activations, norms, pooling, buffers) have one implementation each; their
cost is a constant taken off the budget. The baseline is hls4ml's way: one reuse factor for
every layer (each layer rounds it to its nearest valid factor), the smallest that fits the
budget; it is also the fallback when the solver finds nothing in time. `brute_force`
enumerates every assignment; the tests compare it with the ILP on small instances.

The decision is written as a `reuse_factor` attribute on each multiply-accumulate op and a
`kiln.hls_reuse` summary on the module: the factors, the estimated latency (cycles and
microseconds at the clock), II, DSP/BRAM/LUT/FF use, the budget, and the baseline's cost.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import (
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    f64,
    i64,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from cost_models import fpga
from cost_models.ilp import IntegerProgram, one_of, solve
from ir import dtypes
from ir.attrs import from_attr
from ir.program import entry_function
from ir.quant import get_format
from ir.quant.fixed import FixedPoint
from passes.registry import register_pass

OBJECTIVES = ("latency", "ii")
SOLVERS = ("ilp", "uniform")


class ReuseFactorError(ValueError):
    pass


@dataclass(frozen=True)
class ReuseProblem:
    macs: list[fpga.MacLayer]
    fixed: list[fpga.FixedLayer]
    part: fpga.Part
    budget: fpga.Resources
    objective: str = "latency"
    fixed_resources: fpga.Resources = field(default_factory=fpga.Resources)  # buffers etc.

    @property
    def candidates(self) -> list[list[int]]:
        return [m.candidates() for m in self.macs]

    def fixed_total(self) -> fpga.Resources:
        total = self.fixed_resources
        for f in self.fixed:
            total = total + f.resources
        return total

    def resources(self, choice: list[int]) -> fpga.Resources:
        total = self.fixed_total()
        for m, r in zip(self.macs, choice):
            total = total + m.resources(r, self.part)
        return total

    def latency(self, choice: list[int]) -> int:
        return sum(m.latency(r, self.part) for m, r in zip(self.macs, choice)) + sum(f.latency for f in self.fixed)

    def interval(self, choice: list[int]) -> int:
        return max([m.interval(r) for m, r in zip(self.macs, choice)] + [f.interval for f in self.fixed] + [1])

    def cost(self, choice: list[int]) -> tuple[int, int]:
        """What the objective orders by: (latency,) or (II, latency)."""
        lat = self.latency(choice)
        return (self.interval(choice), lat) if self.objective == "ii" else (lat, 0)

    def fits(self, choice: list[int]) -> bool:
        return self.resources(choice).fits(self.budget)


@dataclass
class ReuseDecision:
    choice: list[int]
    status: str  # optimal | time_limit | fallback | uniform | infeasible
    seconds: float = 0.0
    info: dict[str, float | int | str] = field(default_factory=dict)


def solve_ilp(problem: ReuseProblem, time_limit: float = 10.0) -> ReuseDecision:
    start = time.perf_counter()
    if not problem.macs:
        return ReuseDecision([], "optimal", 0.0)
    cands = problem.candidates
    left = problem.budget
    fixed = problem.fixed_total()

    def build(objective: str, ii_cap: int | None) -> tuple[IntegerProgram, list[list[int]], int | None]:
        prog = IntegerProgram()
        xs: list[list[int]] = []
        t_var = None
        if objective == "ii":
            top = max([m.interval(max(c)) for m, c in zip(problem.macs, cands)] + [f.interval for f in problem.fixed])
            t_var = prog.add_var(1.0, lower=0, upper=float(top), name="II")
        for m, cs in zip(problem.macs, cands):
            cost = (lambda r, m=m: 0.0) if objective == "ii" else (lambda r, m=m: float(m.latency(r, problem.part)))
            xs.append([prog.add_var(cost(r), name=f"{m.name}:R{r}") for r in cs])
            one_of(prog, xs[-1])
        for attr in ("dsp", "bram_18k", "lut"):
            row = {x: float(getattr(m.resources(r, problem.part), attr))
                   for m, cs, vs in zip(problem.macs, cands, xs) for r, x in zip(cs, vs)}
            prog.add_constraint(row, upper=float(getattr(left, attr) - getattr(fixed, attr)))
        fixed_ii = max([f.interval for f in problem.fixed] + [0])
        if t_var is not None:
            prog.lower[t_var] = float(fixed_ii)
            for m, cs, vs in zip(problem.macs, cands, xs):
                row = {x: float(m.interval(r)) for r, x in zip(cs, vs)}
                row[t_var] = -1.0
                prog.add_constraint(row, upper=0.0)
        if ii_cap is not None:
            for m, cs, vs in zip(problem.macs, cands, xs):
                for r, x in zip(cs, vs):
                    if m.interval(r) > ii_cap:
                        prog.upper[x] = 0.0
        return prog, xs, t_var

    info: dict[str, float | int | str] = {}
    ii_cap = None
    if problem.objective == "ii":
        prog, xs, t_var = build("ii", None)
        sol = solve(prog, time_limit)
        if not sol.has_solution:
            return _fallback(problem, sol.status, time.perf_counter() - start)
        ii_cap = round(sol.values[t_var])  # type: ignore[index]
        info["ii_objective"] = ii_cap
    prog, xs, _ = build("latency", ii_cap)
    sol = solve(prog, max(0.1, time_limit - (time.perf_counter() - start)))
    if not sol.has_solution:
        return _fallback(problem, sol.status, time.perf_counter() - start)
    choice = [cs[max(range(len(vs)), key=lambda j: sol.values[vs[j]])] for cs, vs in zip(cands, xs)]
    if not problem.fits(choice):  # a solver tolerance never overruns the budget
        return _fallback(problem, "budget_check_failed", time.perf_counter() - start)
    # The objective counts the multiply-accumulate layers only (the fixed layers add a constant).
    info.update({"objective_mac_cycles": float(sol.objective), "bound_mac_cycles": float(sol.bound),  # type: ignore[arg-type]
                 "gap": float(sol.gap), "variables": prog.num_vars})  # type: ignore[arg-type]
    return ReuseDecision(choice, sol.status, time.perf_counter() - start, info)


def _fallback(problem: ReuseProblem, status: str, seconds: float) -> ReuseDecision:
    base = uniform_baseline(problem)
    if base is not None:
        return ReuseDecision(base[1], "fallback", seconds, {"fallback_reason": f"solver status {status}; "
                                                            "using the uniform baseline"})
    largest = [max(c) for c in problem.candidates]
    return ReuseDecision(largest, "infeasible", seconds, {
        "fallback_reason": f"solver status {status}; no assignment fits the budget, using the largest factors"})


def nearest(candidates: list[int], target: int) -> int:
    """hls4ml's rule for an invalid reuse factor: the closest valid one (ties go up)."""
    return min(candidates, key=lambda r: (abs(r - target), -r))


def uniform_baseline(problem: ReuseProblem) -> tuple[int, list[int]] | None:
    """(the hls4ml-style uniform reuse factor, its per-layer factors): the smallest that fits."""
    if not problem.macs:
        return 1, []
    values = sorted({r for c in problem.candidates for r in c})
    for u in values:
        choice = [nearest(c, u) for c in problem.candidates]
        if problem.fits(choice):
            return u, choice
    return None


def brute_force(problem: ReuseProblem) -> list[int] | None:
    """The best assignment by enumeration (small problems only), ties broken by order."""
    best, best_cost = None, None
    for choice in itertools.product(*problem.candidates):
        c = list(choice)
        if problem.fits(c) and (best_cost is None or problem.cost(c) < best_cost):
            best, best_cost = c, problem.cost(c)
    return best


# ---- from IR to the problem --------------------------------------------------------------


def _bits_of_format(name: str, default: int) -> int:
    try:
        return get_format(name).bits
    except ValueError:
        return default


def _producer_format(value: SSAValue) -> str | None:
    """The format of a `kiln.dequantize` that produces `value` (through a reshape)."""
    op = value.owner
    if isinstance(op, Operation) and op.name == "kiln.reshape":
        op = op.operands[0].owner
    if isinstance(op, Operation) and op.name == "kiln.dequantize":
        return str(from_attr(op.properties["format"]))
    return None


def _decision(op: Operation) -> dict:
    attr = op.attributes.get("quant")
    return {k: from_attr(v) for k, v in attr.data.items()} if isinstance(attr, DictionaryAttr) else {}


def _widths(op: Operation, default: int) -> tuple[int, int]:
    """(activation bits, weight bits) of a contraction, from the quantization decisions."""
    d = _decision(op)
    w_fmt = _producer_format(op.operands[1]) if len(op.operands) > 1 else None
    w_fmt = w_fmt or d.get("format")
    a_fmt = _producer_format(op.operands[0]) or d.get("act_format")
    return (_bits_of_format(a_fmt, default) if a_fmt else default,
            _bits_of_format(w_fmt, default) if w_fmt else default)


def _sample(value: SSAValue) -> tuple[int, ...]:
    shape = dtypes.shape_of(value.type)
    return tuple(shape[1:]) if len(shape) > 1 else tuple(shape)


def _is_const(value: SSAValue) -> bool:
    op = value.owner
    while isinstance(op, Operation) and op.name in ("kiln.reshape", "kiln.dequantize", "kiln.permute"):
        op = op.operands[0].owner
    return isinstance(op, Operation) and op.name in ("kiln.param", "kiln.constant")


def layer_models(fn, part: fpga.Part, default_bits: int, table_size: int):
    """(multiply-accumulate layers with their ops, fixed layers, buffer resources)."""
    macs: list[tuple[Operation, fpga.MacLayer]] = []
    fixed: list[fpga.FixedLayer] = []
    buffers = fpga.Resources()
    for index, op in enumerate(fn.body.block.ops):
        name = f"{op.name.removeprefix('kiln.')}@{index}"
        if not op.name.startswith("kiln.") or op.name in _FREE or _is_const_op(op):
            continue
        out = _sample(op.results[0])
        numel = math.prod(out) if out else 1
        width = out[-1] if out else 1
        rows = max(numel // max(width, 1), 1)
        buffers = buffers + fpga.buffer_cost(numel, default_bits)
        if op.name in ("kiln.linear", "kiln.conv2d") or (op.name == "kiln.matmul" and _is_const(op.operands[1])):
            a_bits, w_bits = _widths(op, default_bits)
            w_shape = dtypes.shape_of(op.operands[1].type)
            if op.name == "kiln.conv2d":
                k, n = math.prod(w_shape[1:]), w_shape[0]
                rows = out[1] * out[2]
            elif op.name == "kiln.linear":
                k, n = w_shape[1], w_shape[0]
            else:
                k, n = w_shape[0], w_shape[1]
            acc = a_bits + w_bits + max(1, math.ceil(math.log2(k)))
            macs.append((op, fpga.MacLayer(name, rows, k, n, k * n, w_bits, a_bits, acc)))
        elif op.name == "kiln.matmul":
            a, b = _sample(op.operands[0]), _sample(op.operands[1])
            k, n = a[-1], b[-1]
            rows = math.prod(a[:-1])
            macs.append((op, fpga.MacLayer(name, rows, k, n, k * n, default_bits, default_bits,
                                           2 * default_bits + math.ceil(math.log2(k)), const_weights=False)))
        elif op.name == "kiln.attention":
            q, kk, v = (_sample(x) for x in op.operands[:3])
            s, d, dv = kk[-2], q[-1], v[-1]
            rows = math.prod(q[:-1])
            macs.append((op, fpga.MacLayer(name, rows, max(d, s), s + dv, s * (d + dv), default_bits, default_bits,
                                           2 * default_bits + math.ceil(math.log2(max(d, s))), const_weights=False)))
            fixed.append(fpga.softmax_layer(name + ".softmax", 0, s, 18, table_size, table_size, 18, part))
        elif op.name in ("kiln.gelu", "kiln.silu", "kiln.sigmoid", "kiln.tanh"):
            gated = op.name in ("kiln.gelu", "kiln.silu")
            fixed.append(fpga.lut_activation_layer(name, rows, width, default_bits, table_size, 18, gated, part))
        elif op.name == "kiln.softmax":
            fixed.append(fpga.softmax_layer(name, rows, width, default_bits, table_size, table_size, 18, part))
        elif op.name == "kiln.layer_norm":
            fixed.append(fpga.layernorm_layer(name, rows, width, default_bits, table_size, 18, part))
        elif op.name == "kiln.pool2d":
            kh, kw = from_attr(op.properties["kernel"])  # type: ignore[misc]
            fixed.append(fpga.pool_layer(name, out[1] * out[2], out[0], kh * kw, default_bits))
        elif op.name == "kiln.reduce":
            src = _sample(op.operands[0])
            fixed.append(fpga.pool_layer(name, max(math.prod(src) // max(numel, 1), 1), numel, 1, default_bits))
        elif op.name == "kiln.batch_norm" and _folds(op) or op.name == "kiln.reshape" or op.name == "kiln.quantize" or op.name == "kiln.dequantize":
            continue
        else:
            mults = width if op.name in ("kiln.mul", "kiln.batch_norm") else 0
            fixed.append(fpga.elementwise_layer(name, op.name.removeprefix("kiln."), rows, width,
                                                default_bits, mults, part))
    return macs, fixed, buffers


_FREE = ("kiln.param", "kiln.constant")


def _is_const_op(op: Operation) -> bool:
    return bool(op.operands) and all(_is_const(v) for v in op.operands)


def _folds(bn: Operation) -> bool:
    src = bn.operands[0]
    return isinstance(src.owner, Operation) and src.owner.name in ("kiln.conv2d", "kiln.linear") \
        and len(list(src.uses)) == 1


@register_pass
@dataclass(frozen=True)
class ReuseFactorPass(ModulePass):
    name: ClassVar[str] = "hls-reuse"

    part: str = fpga.DEFAULT_PART
    clock_ns: float = 5.0
    objective: str = "latency"
    solver: str = "ilp"
    budget_fraction: float = 1.0
    precision: str = "fixed<16,6>"
    table_size: int = 1024
    time_limit: float = 10.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ReuseFactorError(f"hls-reuse: objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.solver not in SOLVERS:
            raise ReuseFactorError(f"hls-reuse: solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not 0 < self.budget_fraction <= 1:
            raise ReuseFactorError(f"hls-reuse: budget-fraction must be in (0, 1], got {self.budget_fraction}")
        if self.clock_ns <= 0 or self.time_limit <= 0:
            raise ReuseFactorError("hls-reuse: clock-ns and time-limit must be > 0")
        try:
            fpga.get_part(self.part)
            FixedPoint.parse(self.precision)
        except ValueError as err:
            raise ReuseFactorError(f"hls-reuse: {err}") from None

    def problem(self, module: ModuleOp) -> tuple[ReuseProblem, list[Operation]]:
        part = fpga.get_part(self.part)
        bits = FixedPoint.parse(self.precision).width
        macs, fixed, buffers = layer_models(entry_function(module), part, bits, self.table_size)
        problem = ReuseProblem([m for _, m in macs], fixed, part, fpga.budget_of(part, self.budget_fraction),
                               self.objective, buffers)
        return problem, [op for op, _ in macs]

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        problem, ops = self.problem(op)
        base = uniform_baseline(problem)
        if self.solver == "uniform":
            decision = ReuseDecision(base[1], "uniform") if base else _fallback(problem, "uniform", 0.0)
        else:
            decision = solve_ilp(problem, self.time_limit)
        for mac_op, r in zip(ops, decision.choice):
            mac_op.attributes["reuse_factor"] = IntegerAttr(r, i64)
        op.attributes["kiln.hls_reuse"] = _attr(self.summary(problem, decision, base))

    def summary(self, problem: ReuseProblem, d: ReuseDecision, base) -> dict[str, float | int | str]:
        clock = self.clock_ns
        out: dict[str, float | int | str] = {
            "part": self.part, "clock_ns": clock, "objective": self.objective, "solver": self.solver,
            "precision": self.precision, "table_size": self.table_size,
            "status": d.status, "solve_seconds": d.seconds, "layers": len(problem.macs),
            "reuse": ",".join(f"{m.name}:{r}" for m, r in zip(problem.macs, d.choice)),
        }
        out.update(_costs("", problem, d.choice, clock))
        for k, v in problem.budget.as_dict().items():
            out[f"budget_{k}"] = v
        if base is not None:
            out["baseline_reuse"] = base[0]
            out.update(_costs("baseline_", problem, base[1], clock))
        else:
            out["baseline_reuse"] = "none fits"
        out.update(d.info)
        return out


def _costs(prefix: str, problem: ReuseProblem, choice: list[int], clock_ns: float) -> dict[str, float | int]:
    lat = problem.latency(choice)
    res = problem.resources(choice)
    return {f"{prefix}latency_cycles": lat, f"{prefix}latency_us": lat * clock_ns / 1000.0,
            f"{prefix}ii_cycles": problem.interval(choice),
            **{f"{prefix}{k}": v for k, v in res.as_dict().items()}}


def _attr(summary: dict[str, float | int | str]) -> DictionaryAttr:
    def one(v):
        if isinstance(v, str):
            return StringAttr(v)
        if isinstance(v, int):
            return IntegerAttr(v, i64)
        return FloatAttr(float(v), f64)

    return DictionaryAttr({k: one(v) for k, v in summary.items()})
