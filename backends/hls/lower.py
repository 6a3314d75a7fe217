"""kiln IR -> HLS graph: one layer per op that computes, constants folded, types decided.

What the walk does, op by op in program order:
- parameters, literals, and every op whose operands are all constants (a materialized
  weight's `kiln.dequantize`, a reshape of it) are evaluated at build time with the op's
  own reference; a `kiln.dequantize` of a fixed-point format remembers that type, so the
  weight is stored in exactly the format the quantization pass chose;
- a batch norm right after a convolution (or a linear) whose weights are still fp32 is
  folded into its weights and bias, as hls4ml does; anywhere else it is a scale-shift;
- a `kiln.quantize`/`kiln.dequantize` pair of a fixed-point format on an activation (the
  quantization pass's weight+activation mode) makes that activation's type the format:
  its producer rounds straight into it when nothing else reads the value, else a cast;
- reshapes that keep the batch dim are free (the C++ arrays are flat, row-major);
- anything else names the op and its node in a `BackendError`.

Types follow `precision.py`; the reuse factor of a layer is the `reuse_factor` attribute
the `hls-reuse` pass wrote on its op. The rule for each op is in `lower_rules.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr
from xdsl.ir import Operation, SSAValue

from backends.base import BackendError
from backends.hls import layers as L
from backends.hls.config import HLSConfig
from backends.hls.tiers import read_tiers
from ir import dtypes
from ir.attrs import from_attr
from ir.ops.sources import ConstantOp, ParamOp
from ir.program import Program
from ir.quant import get_format
from ir.quant.fixed import FixedPoint

TARGET = "hls"


@dataclass
class ConstVal:
    values: torch.Tensor  # full shape, as the IR types it
    fmt: FixedPoint | None = None  # the fixed-point type it was dequantized from


@dataclass
class QuantAct:
    """`kiln.quantize` codes of an activation: the dequantize that follows makes the cast."""

    source: SSAValue
    tensor: L.Tensor
    fmt: FixedPoint


class Lowering:
    def __init__(self, program: Program, config: HLSConfig) -> None:
        self.program, self.config = program, config
        self.fn: func.FuncOp = program.forward
        self.ops = list(self.fn.body.block.ops)
        self.index = {op: i for i, op in enumerate(self.ops)}
        self.env: dict[SSAValue, L.Tensor | ConstVal | QuantAct] = {}
        self.produced: dict[SSAValue, L.Tensor] = {}  # values that are a layer's own output
        self.layers: list[L.Layer] = []
        self.folded: dict[Operation, SSAValue] = {}  # a folded batch norm -> what it equals
        self.notes: list[str] = []
        self.batch = 0

    # ---- helpers ------------------------------------------------------------------------
    def where(self, op: Operation) -> str:
        return f"{op.name} in forward (op {self.index[op]})"

    def fail(self, op: Operation, why: str, hint: str = "") -> BackendError:
        return BackendError(f"{self.where(op)} {why}" + (f"; {hint}" if hint else ""))

    def act(self, op: Operation, value: SSAValue) -> L.Tensor:
        v = self.env[value]
        if isinstance(v, L.Tensor):
            return v
        what = "a constant" if isinstance(v, ConstVal) else "quantized codes"
        raise self.fail(op, f"takes {what} where the HLS backend needs an activation")

    def const(self, value: SSAValue | None) -> ConstVal | None:
        if value is None:
            return None
        v = self.env.get(value)
        if v is None and isinstance(value.owner, ParamOp | ConstantOp):
            self.visit(value.owner)  # a later parameter, read ahead by a fold
            v = self.env[value]
        return v if isinstance(v, ConstVal) else None

    def per_sample(self, op: Operation, value: SSAValue) -> tuple[int, ...]:
        shape = dtypes.shape_of(value.type)
        if not shape or shape[0] != self.batch:
            raise self.fail(op, f"produces {list(shape)}; the HLS design runs one sample per call, so "
                            f"every activation must keep the batch dim (size {self.batch}) first")
        return tuple(shape[1:])

    def new_layer(self, cls: type, op: Operation, inputs: list[L.Tensor], shape: tuple[int, ...],
                  **fields) -> L.Layer:
        name = f"l{len(self.layers)}"
        out = L.Tensor(f"{name}_out", tuple(shape), self.config.precision)
        layer = cls(name, f"{op.name} (op {self.index[op]})", inputs, out, **fields)
        self.layers.append(layer)
        self.env[op.results[0]] = out
        self.produced[op.results[0]] = out
        return layer

    def reuse(self, op: Operation, mults: int) -> int:
        attr = op.attributes.get("reuse_factor")
        r = int(attr.value.data) if isinstance(attr, IntegerAttr) else 1
        if r < 1 or mults % r:
            raise self.fail(op, f"has reuse_factor {r}, which does not divide its {mults} multiplications")
        return r

    def decision(self, op: Operation) -> dict | None:
        attr = op.attributes.get("quant")
        if not isinstance(attr, DictionaryAttr):
            return None
        return {k: from_attr(v) for k, v in attr.data.items()}

    def fixed_format(self, op: Operation, name: str, data: torch.Tensor | float) -> FixedPoint:
        try:
            fmt = get_format(name)
        except ValueError as err:
            raise self.fail(op, str(err)) from None
        if fmt.family != "fixed":
            raise self.fail(op, f"is quantized to {name}, which the HLS backend cannot emit (ap_fixed only)",
                            "quantize with fixed-point formats: quantize{formats=fixed4,fixed6,fixed8,fixed12,fixed16}")
        return fmt.resolve(data).element  # type: ignore[return-value]

    def act_format(self, op: Operation, name: str) -> FixedPoint:
        """An activation format; an auto-I family (no calibrated range) keeps the default's I."""
        return self.fixed_format(op, name, 2.0 ** (self.config.precision.int_bits - 2))

    # ---- the walk -----------------------------------------------------------------------
    def run(self) -> L.HLSGraph:
        args = list(self.fn.body.block.args)
        inputs: list[L.Tensor] = []
        for i, arg in enumerate(args):
            shape = dtypes.shape_of(arg.type)
            if not dtypes.is_float(arg.type) or len(shape) < 2:
                raise BackendError(f"input {i} of forward is {arg.type}; the HLS backend takes float "
                                   "tensors with a leading batch dim (token ids and masks feed ops it does "
                                   "not emit, such as embeddings: give the design the embedded floats)")
            if self.batch and shape[0] != self.batch:
                raise BackendError(f"inputs of forward disagree on the batch dim: {shape[0]} vs {self.batch}")
            self.batch = shape[0]
            t = L.Tensor(f"in{i}", tuple(shape[1:]), self.config.precision)
            self.env[arg] = t
            self.produced[arg] = t
            inputs.append(t)
        outputs: list[L.Tensor] = []
        for op in self.ops:
            if isinstance(op, func.ReturnOp):
                outputs = [self.act(op, v) for v in op.operands]
                break
            if op.results and op.results[0] in self.env:
                continue  # a parameter read ahead
            self.visit(op)
        tiers = read_tiers(self.ops, self.produced, self.layers)  # map-memory's, if it ran
        return L.HLSGraph(inputs, outputs, self.layers, self.batch, self.notes, tiers)

    def visit(self, op: Operation) -> None:
        if op in self.folded:
            self.env[op.results[0]] = self.env[self.folded[op]]
            return
        if isinstance(op, ParamOp):
            name = op.opt("name")
            if name not in self.program.params:
                raise self.fail(op, f"names parameter {name!r}, which the program has no value for")
            self.env[op.result] = ConstVal(self.program.params[name].detach())
            return
        if isinstance(op, ConstantOp):
            self.env[op.result] = ConstVal(op.to_tensor())
            return
        if op.name == "kiln.quantize" and not self.all_const(op):
            self._quantize(op)
            return
        if op.name == "kiln.dequantize" and isinstance(self.env.get(op.operands[0]), QuantAct):
            self._dequantize_act(op)
            return
        if self.all_const(op):
            self._fold(op)
            return
        from backends.hls.lower_rules import RULES

        rule = RULES.get(op.name)
        if rule is None:
            raise self.fail(op, f"has no lowering for target '{TARGET}'",
                            f"the HLS backend emits {', '.join(sorted(RULES))}; run the model on another "
                            "target, or rewrite the op into these")
        rule(self, op)

    def all_const(self, op: Operation) -> bool:
        return bool(op.operands) and all(self.const(v) is not None for v in op.operands)

    def _fold(self, op: Operation) -> None:
        vals = [self.const(v) for v in op.operands]
        try:
            out = op.reference(*[v.values for v in vals])  # type: ignore[attr-defined, union-attr]
        except Exception as err:  # noqa: BLE001 - any failure of a reference is the op's problem
            raise self.fail(op, f"could not be evaluated at build time: {err}") from None
        outs = out if isinstance(out, tuple) else (out,)
        fmt = vals[0].fmt if op.name in ("kiln.reshape", "kiln.permute", "kiln.expand") else None  # type: ignore[union-attr]
        if op.name == "kiln.dequantize":
            f = get_format(op.opt("format"))
            fmt = f.element if f.family == "fixed" else None  # type: ignore[assignment]
        for r, v in zip(op.results, outs):
            self.env[r] = ConstVal(v, fmt)

    # ---- activation quantization ------------------------------------------------------------
    def _quantize(self, op: Operation) -> None:
        x = self.act(op, op.operands[0])
        fmt = self.act_format(op, op.opt("format"))
        self.env[op.results[0]] = QuantAct(op.operands[0], x, fmt)
        self.env[op.results[1]] = ConstVal(torch.ones(1, 1))

    def _dequantize_act(self, op: Operation) -> None:
        q = self.env[op.operands[0]]
        assert isinstance(q, QuantAct)
        self.env[op.result] = self.typed(op, q.source, q.fmt)

    def typed(self, op: Operation, value: SSAValue, fmt: FixedPoint) -> L.Tensor:
        """The activation `value` in type `fmt`: its producer rounds into `fmt` directly when
        the quantize is its only reader, else a cast layer converts it."""
        t = self.env[value]
        assert isinstance(t, L.Tensor)
        if t.type == fmt:
            return t
        if value in self.produced and len(list(value.uses)) == 1:
            t.type = fmt
            return t
        layer = self.new_layer(L.Cast, op, [t], t.shape)
        layer.output.type = fmt
        return layer.output


def lower(program: Program, config: HLSConfig) -> L.HLSGraph:
    return Lowering(program, config).run()
