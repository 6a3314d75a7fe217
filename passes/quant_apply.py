"""Quantized numerics of a program: fake-quantized evaluation and materialized IR.

Two ways to run a quantization decision, which give the same bits:

- `QuantRunner` evaluates an assignment without touching the IR: a hook replaces each
  layer's weight operand by its dequantized value (and, in weight+activation mode, the
  activation operand by its quantize-dequantize value). Sensitivity measurement and the
  uniform-format comparisons run hundreds of assignments this way.
- `materialize` rewrites the program for backends: each decided weight parameter becomes
  packed codes and scales parameters feeding a `kiln.dequantize` (plus a `kiln.reshape`
  for conv2d, whose [O, C*kh*kw] row view is what is quantized), and in
  weight+activation mode a `kiln.quantize` / `kiln.dequantize` pair is put on the
  activation operand. The fp32 weight is dropped from `program.params`.

Both call the same `ir.quant` functions on the same row views, so the materialized
program run by the interpreter equals the fake-quantized evaluation exactly; the tests
and `quantize_program` check that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from xdsl.dialects.builtin import DictionaryAttr
from xdsl.ir import Operation

from ir import dtypes
from ir.attrs import from_attr
from ir.ops.movement import ReshapeOp
from ir.ops.quant import DequantizeOp, QuantizeOp
from ir.ops.sources import ParamOp
from ir.program import Program
from ir.quant import act_format_for, from_rows, get_format, to_rows
from ir.quant.formats import PER_TENSOR
from ir.quant.observe import body_ops, run_traced
from ir.quant.registry import DYNAMIC_ACT
from passes.quant_layers import Layer

WEIGHT_ONLY = "weight-only"
WEIGHT_ACTIVATION = "weight-activation"
MODES = (WEIGHT_ONLY, WEIGHT_ACTIVATION)
HLS_DEFAULT_ACT = "fixed<16,6>"  # hls4ml's default precision, when no range was calibrated


@dataclass(frozen=True)
class LayerQuant:
    format: str  # the chosen format (a registered name)
    storage: str  # the concrete format the codes are in (auto fixed point resolved)
    act_format: str | None = None  # concrete activation format (weight+activation mode)
    act_scale: float | None = None  # static per-tensor activation scale, from calibration


def act_plan(weight_format: str, mode: str, act_absmax: float | None, override: str = "") -> tuple[str | None, float | None]:
    """(concrete activation format, static scale or None) for a layer in `mode`.

    A W8A8-dynamic weight format (`DYNAMIC_ACT`, e.g. `int8_dyn`) quantizes its activation
    per row at run time in either mode: that rounding is part of the format's numerics."""
    if weight_format in DYNAMIC_ACT:
        return DYNAMIC_ACT[weight_format], None
    if mode == WEIGHT_ONLY:
        return None, None
    fmt = get_format(override or act_format_for(weight_format))
    if fmt.resolve(1.0) is not fmt:  # auto fixed point: integer bits from the calibrated range
        if act_absmax is None:
            return HLS_DEFAULT_ACT, None
        fmt = fmt.resolve(act_absmax)
    scale = None
    if act_absmax is not None and fmt.group == PER_TENSOR and fmt.scale in ("f32", "f16"):
        s = float(torch.tensor(act_absmax, dtype=torch.float32) / torch.tensor(fmt.element.max_value, dtype=torch.float32))
        scale = s if s > 0 else 1.0
    return fmt.name, scale


def weight_storage(layer: Layer, weight: torch.Tensor, fmt: str) -> str:
    return get_format(fmt).resolve(to_rows(weight.reshape(layer.view_shape), layer.axis)).name


def fake_weight(layer: Layer, weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """The layer's weight as the format stores it (dequantized), in the parameter's shape."""
    rows = to_rows(weight.reshape(layer.view_shape).to(torch.float32), layer.axis)
    f = get_format(fmt).resolve(rows)
    back = from_rows(f.dequantize(f.quantize(rows)), layer.view_shape, layer.axis)
    return back.reshape(layer.shape).contiguous()


def fake_act(x: torch.Tensor, fmt: str, scale: float | None, axis: int) -> torch.Tensor:
    f = get_format(fmt)
    return from_rows(f.dequantize(f.quantize(to_rows(x, axis), scale)), tuple(x.shape), axis).contiguous()


class QuantRunner:
    """Runs a program with some layers fake-quantized (see the module docstring)."""

    def __init__(self, program: Program, layers: Sequence[Layer], cache_bytes: int = 256 << 20) -> None:
        self.program = program
        self.layers = list(layers)
        self.ops = body_ops(program.forward)
        self.index = {op: i for i, op in enumerate(self.ops)}
        self._weights: dict[tuple[str, str], torch.Tensor] = {}
        self._cache_bytes = cache_bytes  # quantized weights are kept while they fit

    def first_index(self, layer: Layer) -> int:
        return min(self.index[op] for op in layer.users)

    def weight(self, layer: Layer, fmt: str) -> torch.Tensor:
        key = (layer.weight, fmt)
        if key in self._weights:
            return self._weights[key]
        value = fake_weight(layer, self.program.params[layer.weight].detach(), fmt)
        if value.numel() * 4 <= self._cache_bytes:
            self._cache_bytes -= value.numel() * 4
            self._weights[key] = value
        return value

    def hook(self, plans: dict[str, LayerQuant]):
        by_op: dict[Operation, tuple[Layer, LayerQuant]] = {}
        for layer in self.layers:
            if layer.weight in plans:
                for op in layer.users:
                    by_op[op] = (layer, plans[layer.weight])

        def apply(index: int, op: Operation, values: list[torch.Tensor]) -> list[torch.Tensor]:
            hit = by_op.get(op)
            if hit is None:
                return values
            layer, plan = hit
            values = list(values)
            values[1] = self.weight(layer, plan.format)
            if plan.act_format is not None:
                values[0] = fake_act(values[0], plan.act_format, plan.act_scale, layer.act_axis)
            return values

        return apply

    def run(self, args: Sequence[torch.Tensor], plans: dict[str, LayerQuant], start: int = 0, cache=None):
        out, _ = run_traced(self.program.forward, list(args), self.program.params, self.hook(plans),
                            start=start, cache=cache, ops=self.ops)
        return out

    def trace(self, args: Sequence[torch.Tensor]):
        """(outputs, all values) of the fp32 program, the cache for `run(start=...)`."""
        return run_traced(self.program.forward, list(args), self.program.params, ops=self.ops)


def output_error(refs: Sequence[Sequence[torch.Tensor]], outs: Sequence[Sequence[torch.Tensor]], metric: str = "mse") -> float:
    """Relative MSE (sum of squared differences over sum of squares, float outputs of all
    batches), or with metric "kl" the mean KL(softmax(ref) || softmax(out)) over the last dim."""
    if metric == "kl":
        total, rows = 0.0, 0
        for ref, out in zip(refs, outs):
            r, o = ref[0].double(), out[0].double()
            p = torch.log_softmax(r, dim=-1)
            q = torch.log_softmax(o, dim=-1)
            total += float((p.exp() * (p - q)).sum())
            rows += r.numel() // r.shape[-1]
        return total / max(rows, 1)
    num = den = 0.0
    for ref, out in zip(refs, outs):
        for r, o in zip(ref, out):
            if r.dtype.is_floating_point:
                num += float(((o.double() - r.double()) ** 2).sum())
                den += float((r.double() ** 2).sum())
    return num / den if den > 0 else num


def layer_plans_from_ir(layers: Sequence[Layer]) -> dict[str, LayerQuant]:
    """The decisions the `quantize` pass wrote (`quant` attributes), per weight."""
    plans = {}
    for layer in layers:
        attr = layer.users[0].attributes.get("quant")
        if isinstance(attr, DictionaryAttr):
            d = {k: from_attr(v) for k, v in attr.data.items()}
            plans[layer.weight] = LayerQuant(
                str(d["format"]), str(d.get("storage", d["format"])),
                str(d["act_format"]) if d.get("act_format") else None,
                float(d["act_scale"]) if "act_scale" in d else None,
            )
    return plans


def materialize(program: Program, layers: Sequence[Layer]) -> int:
    """Rewrite decided layers into packed parameters and quantize/dequantize ops; returns
    how many weights were rewritten. The fp32 weights leave `program.params`."""
    plans = layer_plans_from_ir(layers)
    block = program.forward.body.block
    done = 0
    for layer in layers:
        plan = plans.get(layer.weight)
        if plan is None:
            continue
        weight = program.params[layer.weight].to(torch.float32)
        rows = to_rows(weight.reshape(layer.view_shape), layer.axis)
        fmt = get_format(plan.format).resolve(rows)
        if fmt.name != plan.storage:
            raise ValueError(f"quantize: {layer.weight} resolves to {fmt.name}, the decision says {plan.storage}")
        q = fmt.quantize(rows)
        codes_name, scales_name = f"{layer.weight}.qcodes", f"{layer.weight}.qscales"
        program.params[codes_name] = fmt.pack(q).view(torch.int8)
        new_ops: list[Operation] = []
        codes = ParamOp.of(codes_name, dtypes.tensor_type(tuple(program.params[codes_name].shape), torch.int8))
        new_ops.append(codes)
        scales = None
        if q.scales is not None:
            stored = q.scales.view(torch.int8) if q.scales.dtype == torch.uint8 else q.scales
            program.params[scales_name] = stored.contiguous()
            scales = ParamOp.of(scales_name, dtypes.tensor_type(tuple(stored.shape), stored.dtype))
            new_ops.append(scales)
        deq = DequantizeOp.make(codes, scales, format=fmt.name, axis=layer.axis, shape=layer.view_shape)
        new_ops.append(deq)
        value = deq.result
        if layer.view_shape != layer.shape:
            reshape = ReshapeOp.make(value, shape=layer.shape)
            new_ops.append(reshape)
            value = reshape.result
        block.insert_ops_after(new_ops, layer.param)
        layer.param.result.replace_all_uses_with(value)
        block.erase_op(layer.param)
        del program.params[layer.weight]
        if plan.act_format is not None:
            for op in layer.users:
                x = op.operands[0]
                axis = layer.act_axis % len(dtypes.shape_of(x.type))
                qop = QuantizeOp.make(x, format=plan.act_format, axis=axis, scale=plan.act_scale)
                dop = DequantizeOp.make(qop.codes, qop.scales if get_format(plan.act_format).scale != "none" else None,
                                        format=plan.act_format, axis=axis)
                block.insert_ops_before([qop, dop], op)
                op.operands = [dop.result, *op.operands[1:]]
        done += 1
    return done
