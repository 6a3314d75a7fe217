"""Quantized weights in the TVM lowering: each `kiln.dequantize` takes one of three paths.

- `fused-tir`: a packed dequantize whose every use is the weight of a `kiln.linear` or
  `kiln.matmul` becomes part of those contractions: one `kiln_qmm_*` TIR kernel each
  (`quant_matmul.py`) that reads the packed bytes and scales. The dequantize emits
  nothing, so the fp32 weight exists neither as a parameter nor as a buffer.
- `dequant-tir`: a packed dequantize with another consumer (conv2d's reshape, an
  elementwise op) decodes into its fp32 shape each call with a TIR kernel, then the
  consumer runs as before. Still packed at rest; the fp32 weight is a per-call temporary.
- `reference`: the op's torch emulation through a packed function (`reference.py`): codes
  that are not packed (activations in weight+activation mode), formats TIR cannot decode,
  or a dequantize inside a multi-op fusion group.
- `int8-dyn-vnni` / `int8-dyn-tir (no VNNI)`: an `int8_dyn` weight whose consumers read
  a per-row dynamically quantized activation: the activation's quantize/dequantize pair
  and the contraction become one int8 kernel with int32 sums (`quant_dyn_lower.py`).

The plan is made once per program, before emission, and each site records its path and
the reason, which the build reports per layer (`Lowered.quant_paths`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from tvm import relax
from xdsl.ir import Block, SSAValue

from backends.tvm.groups import alone, group_sizes
from backends.tvm.quant_decode import PackedLayout, unsupported_reason
from backends.tvm.quant_dyn_lower import DYN_PATHS, emit_dynamic, plan_dynamic, settle
from backends.tvm.quant_matmul import OPAQUE, MatmulShape, dequantize_func, quant_matmul_func
from backends.tvm.target import host_lanes
from ir import dtypes
from ir.core import KilnOp
from ir.ops.contraction import LinearOp, MatmulOp
from ir.ops.quant import DequantizeOp, QuantizeOp
from ir.ops.sources import ParamOp
from ir.quant import get_format, rows_of

FUSED = "fused-tir"
DEQUANT_TIR = "dequant-tir"
REFERENCE = "reference"
R = relax.op


@dataclass
class QuantSite:
    """One `kiln.dequantize` and the path it takes."""

    dequant: DequantizeOp
    weight: str  # the quantized parameter's name (codes param minus `.qcodes`)
    path: str
    reason: str = ""
    consumers: dict[KilnOp, MatmulShape] = field(default_factory=dict)
    act_ops: dict[KilnOp, tuple[QuantizeOp, DequantizeOp]] = field(default_factory=dict)

    @property
    def layout(self) -> PackedLayout:
        shape = tuple(self.dequant.opt("shape"))
        return PackedLayout(self.dequant.opt("format"), *rows_of(shape, self.dequant.opt("axis")))


def _weight_name(op: DequantizeOp, index: int) -> str:
    owner = op.codes.owner
    if isinstance(owner, ParamOp):
        return str(owner.opt("name")).removesuffix(".qcodes")
    return f"{'activation' if isinstance(owner, QuantizeOp) else 'dequantize'}#{index}"


def contraction_shape(
    user: KilnOp, operand: int, wshape: tuple[int, ...], axis: int
) -> MatmulShape | None:
    """The fused kernel's problem for a contraction reading the weight, or None."""
    x, result = user.operands[0].type, user.results[0].type
    if (
        operand != 1
        or dtypes.dtype_of(x) != torch.float32
        or dtypes.dtype_of(result) != torch.float32
    ):
        return None
    a, out = dtypes.shape_of(x), dtypes.shape_of(result)
    if len(a) < 2:
        return None
    if isinstance(user, LinearOp):
        return MatmulShape(a, out, wshape[1]) if axis % 2 == 1 else None
    if not isinstance(user, MatmulOp) or axis % len(wshape) != len(wshape) - 2:
        return None
    wbatch, abatch = wshape[:-2], a[:-2]
    if math.prod(wbatch) == 1:  # one weight for every row of A
        return MatmulShape(a, out, wshape[-2]) if len(out) == len(a) else None
    if len(out) == len(wshape) and (abatch == wbatch or math.prod(abatch) == 1):
        return MatmulShape(a, out, wshape[-2], batch_dims=len(wbatch))
    return None


def plan_sites(block: Block) -> list[QuantSite]:
    sizes = group_sizes(block)
    sites = []
    for i, op in enumerate(o for o in block.ops if isinstance(o, DequantizeOp)):
        site = QuantSite(op, _weight_name(op, i), REFERENCE)
        sites.append(site)
        shape = op.opt("shape")
        if shape is None:
            site.reason = "codes are not packed (an activation quantized at run time)"
            continue
        reason = unsupported_reason(get_format(op.opt("format")))
        if reason is not None or not alone(op, sizes):
            site.reason = reason or "the dequantize is inside a multi-op fusion group"
            continue
        site.path, site.reason = DEQUANT_TIR, ""
        for use in op.result.uses:
            user = use.operation
            problem = (
                contraction_shape(user, use.index, tuple(shape), op.opt("axis"))
                if alone(user, sizes)
                else None
            )
            if problem is None:
                site.reason = (
                    f"used by {user.name} (operand {use.index}), which has no fused kernel"
                )
                site.consumers.clear()
                break
            site.consumers[user] = problem
        if site.consumers:
            site.path = FUSED
            plan_dynamic(site, sizes)
    settle(sites)
    return sites


def _name(prefix: str, fmt: str, *dims: int) -> str:
    return f"{prefix}_{re.sub(r'[^0-9a-zA-Z]+', '_', fmt).strip('_')}_{'x'.join(map(str, dims))}"


class QuantLowering:
    """Emits the planned sites while `lower_program` walks the steps."""

    def __init__(self, block: Block, threads: int = 2) -> None:
        self.sites = plan_sites(block)
        self.threads = threads  # what the matmul kernels are built for (`thread_policy.py`)
        self._by_dequant = {s.dequant: s for s in self.sites if s.path != REFERENCE}
        self._by_consumer = {c: s for s in self.sites for c in s.consumers}
        self._folded = {o for s in self.sites for pair in s.act_ops.values() for o in pair}

    @property
    def replaced(self) -> set[str]:
        """Codes parameters only `int8_dyn` kernels read: bound in their VNNI layout only."""
        names = {}
        for s in self.sites:
            owner = s.dequant.codes.owner
            if isinstance(owner, ParamOp):
                name = str(owner.opt("name"))
                only = s.path in DYN_PATHS and all(u.operation is s.dequant for u in owner.result.uses)
                names[name] = names.get(name, True) and only
        return {n for n, only in names.items() if only}

    @property
    def paths(self) -> dict[str, str]:
        """Quantized weight -> path; activations (weight+activation mode) are not layers."""
        return {s.weight: s.path for s in self.sites if isinstance(s.dequant.codes.owner, ParamOp)}

    def emit(self, bb: relax.BlockBuilder, step: list[KilnOp], env: dict[SSAValue, Any], derived: Any = None) -> bool:
        """Emit `step` if it is a planned site (or its consumer); False leaves it to the table.
        `derived` (lower.py's load-time parameters) is needed by `int8_dyn` sites."""
        if len(step) != 1:
            return False
        op = step[0]
        if op in self._folded:
            return True  # an activation quantize/dequantize folded into an int8_dyn kernel
        site = self._by_dequant.get(op)
        if site is not None:
            if site.path == DEQUANT_TIR:
                env[op.result] = self._dequantize(bb, site, env)
            return True  # a fused site's dequantize emits nothing
        site = self._by_consumer.get(op)
        if site is None:
            return False
        if site.path in DYN_PATHS:
            bias = op.bias if isinstance(op, LinearOp) and op.bias is not None else None
            env[op.results[0]] = emit_dynamic(bb, site, op, env, derived, self.threads, bias)
            return True
        env[op.results[0]] = self._matmul(bb, site, op, env)
        return True

    def _packed_args(self, site: QuantSite, env: dict[SSAValue, Any]) -> list[relax.Expr]:
        args = [env[site.dequant.codes]]
        if site.layout.scale_shape is not None:
            args.append(env[site.dequant.scales])
        return args

    def _matmul(
        self, bb: relax.BlockBuilder, site: QuantSite, op: KilnOp, env: dict[SSAValue, Any]
    ) -> relax.Expr:
        shape, layout = site.consumers[op], site.layout
        bias = isinstance(op, LinearOp) and op.bias is not None
        func = quant_matmul_func(shape, layout, bias, host_lanes(), threads=self.threads)
        dims = (*shape.a_shape, *shape.out_shape)
        name = _name("kiln_qmm", layout.format, *dims) + ("_bias" if bias else "")
        gv = bb.add_func(func.without_attr("global_symbol"), name)
        args = [env[op.operands[0]], *self._packed_args(site, env)]
        args += [env[op.bias]] if bias else []
        out_ty = relax.TensorType(list(shape.out_shape), "float32")
        return bb.emit(relax.call_tir(gv, args, out_ty))

    def _dequantize(
        self, bb: relax.BlockBuilder, site: QuantSite, env: dict[SSAValue, Any]
    ) -> relax.Expr:
        layout, shape = site.layout, tuple(site.dequant.opt("shape"))
        func = dequantize_func(layout, shape, site.dequant.opt("axis"))
        func = func.without_attr("global_symbol").with_attr("op_pattern", OPAQUE)
        gv = bb.add_func(func, _name("kiln_dequantize", layout.format, *shape))
        out_ty = relax.TensorType(list(shape), "float32")
        return bb.emit(relax.call_tir(gv, self._packed_args(site, env), out_ty))
