"""The layers the quantization pass decides: contractions whose weight is a parameter.

A layer is one weight parameter (`kiln.param`) and the contractions that use it as their
weight: `kiln.linear` and `kiln.conv2d` (operand 1) and `kiln.matmul` with a parameter on
the right. A parameter with any other use (an embedding table, a weight tied to an
embedding, a bias) is left in fp32 and listed as skipped with the reason.

Each layer knows its row view (rows = output channels, k = the reduction dim, where
groups and MX blocks run), so the bytes of any format are exact, and its modeled latency
per format comes from the roofline model: the weight bytes shrink with the format; in
weight-only mode the multiply stays fp32 and pays for dequantizing; in weight+activation
mode it runs at the hardware's int8 / fp8 rate where the spec has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.ir import Operation

from cost_models.hardware import Hardware
from ir import dtypes
from ir.ops.contraction import Conv2dOp, LinearOp, MatmulOp
from ir.ops.sources import ParamOp
from ir.quant import get_format
from ir.quant.registry import DYNAMIC_ACT

CONTRACTIONS = (LinearOp, Conv2dOp, MatmulOp)


@dataclass(frozen=True)
class Layer:
    weight: str  # the parameter's name
    param: ParamOp
    users: tuple[Operation, ...]  # the contractions that use it, in program order
    kind: str  # "linear" | "conv2d" | "matmul"
    shape: tuple[int, ...]  # the parameter's shape
    view_shape: tuple[int, ...]  # what `kiln.dequantize` produces (conv2d: [O, C*kh*kw])
    axis: int  # the reduction axis of `view_shape`
    act_axis: int  # the axis of the activation operand that the contraction reduces

    @property
    def rows(self) -> int:
        return self.numel // self.k

    @property
    def k(self) -> int:
        return self.view_shape[self.axis]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def fp32_bytes(self) -> int:
        return self.numel * 4

    def nbytes(self, fmt: str) -> int:
        return get_format(fmt).nbytes(self.rows, self.k)


def find_layers(fn: func.FuncOp) -> tuple[list[Layer], dict[str, str]]:
    """(quantizable layers in program order, skipped parameter -> reason)."""
    layers: list[Layer] = []
    skipped: dict[str, str] = {}
    for op in fn.body.block.ops:
        if not isinstance(op, ParamOp):
            continue
        name = op.opt("name")
        t = op.result.type
        if not dtypes.is_float(t) or not op.result.uses:
            continue
        users = [u.operation for u in op.result.uses]
        kinds = {_weight_kind(u.operation, u.index) for u in op.result.uses}
        if None in kinds or len(kinds) != 1:
            if any(k is not None for k in kinds):
                skipped[name] = "also used outside a contraction's weight operand (tied or shared)"
            continue
        kind = kinds.pop()
        shape = dtypes.shape_of(t)
        if kind == "conv2d":
            view, axis, act_axis = (shape[0], math.prod(shape[1:])), 1, 1
        elif kind == "linear":
            view, axis, act_axis = shape, 1, -1
        else:
            view, axis, act_axis = shape, len(shape) - 2, -1
        ordered = tuple(o for o in fn.body.block.ops if o in users)
        layers.append(Layer(name, op, ordered, kind, shape, tuple(view), axis, act_axis))
    return layers, skipped


def _weight_kind(op: Operation, index: int) -> str | None:
    if isinstance(op, LinearOp) and index == 1:
        return "linear"
    if isinstance(op, Conv2dOp) and index == 1:
        return "conv2d"
    if isinstance(op, MatmulOp) and index == 1:
        return "matmul"
    return None


# Compute dtype of weight+activation kernels, by format family, for the roofline peak.
_COMPUTE_DTYPE = {"int": "int8", "fp8": "float8_e4m3fn", "mx": "float8_e4m3fn", "bfp": "int8",
                  "fixed": "int8", "float": "bfloat16"}


def modeled_seconds(layer: Layer, fmt: str, mode: str, hw: Hardware) -> float:
    """Roofline time of the layer's contractions with its weight stored in `fmt`."""
    f = get_format(fmt)
    weight_bytes = layer.nbytes(fmt)
    total = 0.0
    dynamic = fmt in DYNAMIC_ACT  # W8A8 in every mode: int8 dot products, no weight decode
    dtype = "float32" if mode == "weight-only" and not dynamic else _COMPUTE_DTYPE.get(f.family, "float32")
    for op in layer.users:
        act_bytes = sum(dtypes.nbytes(o.type) for i, o in enumerate(op.operands) if i != 1)
        out_bytes = sum(dtypes.nbytes(r.type) for r in op.results)
        flops = op.flops()  # type: ignore[attr-defined]
        if mode == "weight-only" and not dynamic:
            flops += 2 * layer.numel  # dequantize: decode and scale every weight
        moved = act_bytes + out_bytes + weight_bytes
        total += max(flops / hw.flops(dtype), moved / hw.mem_bandwidth) + hw.launch_overhead_s
    return total
