"""Which convolutions run the direct kernel (`conv_direct.py`), and what they absorb.

Decided for a whole program before lowering, like `dense_packed.DensePlan`. A convolution
qualifies when it is float32, its weight is a `kiln.param`, it is alone in its fusion group
and `use_direct` says so.

Epilogue: in a convnet nearly every convolution is followed by an inference batch norm and
often a residual add and an activation (ReLU, ReLU6), which the fusion pass groups into a
kernel of their own (contractions are not fused with their consumers on this target),
sometimes with more (the next convolution's padding). When the batch norm (on parameters)
reads only the convolution, the plan absorbs it, and the chain after it in the same group:
an add of a shortcut that exists before the convolution runs, then a `relu`/`clamp`: the batch norm is folded into the packed weight and a
bias at load time (W' = W * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta,
as derived parameters, so a warm reload recomputes them from the model's weights) and the
shortcut is added and the activation clamped on write-back. The rest of the group stays a
kernel (or none is left). MobileNetV2 has 52 batch norms, 10 shortcut adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tvm import relax, tirx

from backends.tvm.conv_direct import (
    Activation,
    ConvOptions,
    ConvShape,
    channel_block,
    conv_direct_func,
    pack_weight,
    pixel_tile,
    use_direct,
)
from backends.tvm.groups import alone, group_sizes
from backends.tvm.target import host_lanes
from ir import dtypes
from ir.core import KilnOp
from ir.ops.contraction import Conv2dOp
from ir.ops.sources import ParamOp


@dataclass
class Epilogue:
    """What a convolution's write-back absorbs (see `_epilogue`)."""

    ops: list[KilnOp]  # the absorbed ops, in program order: [batch_norm][, add][, activation]
    names: tuple[str, str, str, str] | None  # the batch norm's mean, var, weight, bias; None: no batch norm
    eps: float
    activation: Activation
    residual: Any = None  # the value the absorbed add reads besides the convolution


@dataclass
class DirectConv:
    shape: ConvShape
    cb: int
    weight: str  # the parameter's name
    bias: str | None  # the convolution's own bias parameter, if any
    func: tirx.PrimFunc  # the scheduled kernel
    epilogue: Epilogue | None = None


@dataclass
class ConvPlan:
    """The plan: `sites` (with what each absorbs), `replaced` (parameters bound packed only),
    `paths` (each convolution's path and why, for the report and the cache key)."""

    sites: dict[KilnOp, DirectConv] = field(default_factory=dict)
    replaced: set[str] = field(default_factory=set)
    paths: dict[str, str] = field(default_factory=dict)
    absorbed: set[KilnOp] = field(default_factory=set)
    lanes: int = 16
    _derived: dict[tuple, relax.Var] = field(default_factory=dict)

    @staticmethod
    def of(block: Any, options: ConvOptions | None = None) -> ConvPlan:
        options = options or ConvOptions()
        plan = ConvPlan(lanes=host_lanes())
        sizes = group_sizes(block)
        order = {op: i for i, op in enumerate(block.ops)}
        for op in block.ops:
            if not isinstance(op, Conv2dOp) or (weight := param_name(op.operands[1])) is None:
                continue
            site, why = _site(op, weight, sizes, order, options, plan.lanes)
            plan.paths[weight] = why
            if site is not None:
                plan.sites[op] = site
                plan.absorbed |= set(site.epilogue.ops) if site.epilogue else set()
        only: dict[str, bool] = {}
        for op in block.ops:
            if isinstance(op, ParamOp):
                consumed = all(plan._consumes(u.operation, u.index) for u in op.result.uses)
                only[op.opt("name")] = only.get(op.opt("name"), True) and consumed
        plan.replaced = {name for name, ok in only.items() if ok}
        return plan

    def _consumes(self, op: KilnOp, index: int) -> bool:
        """Whether operand `index` of `op` is read only at load time: a direct convolution's
        weight (packed), its bias when a batch norm was folded in, an absorbed batch norm's
        statistics and affine. Such parameters are not bound to the executable at all: every
        bound parameter costs the VM a type and shape check on each call (~0.17 us; an
        absorbed batch norm brings four)."""
        site = self.sites.get(op)
        if site is not None:
            return index == 1 or (index == 2 and site.epilogue is not None and site.epilogue.names is not None)
        return op in self.absorbed and op.name == "kiln.batch_norm" and index >= 1

    def remaining(self, step: list[KilnOp]) -> list[KilnOp]:
        """`step` without the ops absorbed into a convolution (emitted with it)."""
        return [op for op in step if op not in self.absorbed]

    def emit(self, bb: relax.BlockBuilder, step: list[KilnOp], env: dict, derived: Any) -> bool:
        """Emit `step` if it is a direct convolution; False leaves it to the lowering's table."""
        site = self.sites.get(step[0]) if len(step) == 1 else None
        if site is None:
            return False
        op, s = step[0], site.shape
        kind = "dw" if s.depthwise else "conv"
        dims = "x".join(map(str, (s.n, s.ci, s.h, s.w, s.co, s.kh, s.kw)))
        gv = bb.add_func(site.func.without_attr("global_symbol"), f"kiln_{kind}_{dims}_s{s.stride[0]}")
        weight, folded_bias = self._weights(site, derived)
        args = [env[op.operands[0]], weight]
        if folded_bias is not None:
            args.append(folded_bias)
        elif len(op.operands) > 2:
            args.append(env[op.operands[2]])
        if site.epilogue is not None and site.epilogue.residual is not None:
            args.append(env[site.epilogue.residual])
        out = bb.emit(relax.call_tir(gv, args, relax.TensorType([s.n, s.co, *s.out_hw], "float32")))
        env[op.results[0]] = out
        if site.epilogue is not None:  # the absorbed ops' results are this kernel's output
            env[site.epilogue.ops[-1].results[0]] = out
        return True

    def _weights(self, site: DirectConv, derived: Any) -> tuple[relax.Var, relax.Var | None]:
        """The packed weight, and the folded bias when a batch norm was absorbed."""
        s, name, cb, epi = site.shape, site.weight, site.cb, site.epilogue
        shape = [s.co, s.kh, s.kw] if s.depthwise else [s.co // cb, s.ci // s.groups, s.kh, s.kw, cb]
        if epi is None or epi.names is None:  # no batch norm to fold: the weight as it is
            key = (name, cb)
            if key not in self._derived:
                self._derived[key] = derived.add(f"{name}.conv{cb}", lambda p: pack_weight(p[name], s, cb),
                                                 shape, "float32")
            return self._derived[key], None
        key = (name, cb, epi.names)
        if key not in self._derived:
            fold = _folder(name, site.bias, epi)
            self._derived[key] = (
                derived.add(f"{name}.bnconv{cb}", lambda p: pack_weight(fold(p)[0], s, cb), shape, "float32"),
                derived.add(f"{name}.bnbias", lambda p: fold(p)[1], [s.co], "float32"),
            )
        return self._derived[key]


def _folder(weight: str, bias: str | None, epi: Epilogue):
    """p -> (W', b'): the batch norm folded into the convolution, computed in float64. The
    closure holds names and eps only: the compile cache stores it (cloudpickle) for warm
    reloads, which must not drag the IR's ops along."""
    (mean, var, gamma, beta), eps = epi.names, epi.eps

    def fold(p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        scale = p[gamma].detach().double() / torch.sqrt(p[var].detach().double() + eps)
        w = p[weight].detach().double().reshape(len(scale), -1)  # a conv1d's weight has no H
        b = p[bias].detach().double() if bias is not None else torch.zeros_like(scale)
        folded_b = (b - p[mean].detach().double()) * scale + p[beta].detach().double()
        return (w * scale[:, None]).float().contiguous(), folded_b.float().contiguous()

    return fold


def _epilogue(conv: Conv2dOp, order: dict[Any, int]) -> Epilogue | None:
    """What the convolution's write-back can absorb, as a chain of single-use ops in one
    fusion group: an inference batch norm (on parameters, folded at load), an add of a
    shortcut that exists before the convolution runs (ResNet, MobileNetV2), then relu /
    clamp / silu. The rest of that group (a pad for the next convolution, a pooling)
    stays a kernel of its own; None when nothing is absorbed."""
    ops: list[KilnOp] = []
    names, eps, residual, activation = None, 0.0, None, None
    nxt = _next_in_chain(conv, None)
    group = nxt.attributes.get("group") if nxt is not None else None
    if nxt is not None and nxt.name == "kiln.batch_norm" and nxt.operands[0] is conv.results[0]:
        if not all(isinstance(v.owner, ParamOp) for v in nxt.operands[1:5]):
            return None  # a training-mode or computed batch norm: not foldable at load time
        names, eps = tuple(v.owner.opt("name") for v in nxt.operands[1:5]), float(nxt.opt("eps"))
        ops.append(nxt)
        nxt = _next_in_chain(nxt, group)
    if ops and nxt is not None and nxt.name == "kiln.add":  # only after a batch norm: a bias-less
        last = ops[-1].results[0]                          # conv + add is a linear's residual
        other = nxt.operands[1] if nxt.operands[0] is last else nxt.operands[0]
        same = dtypes.shape_of(other.type) == dtypes.shape_of(last.type)
        if same and dtypes.dtype_of(other.type) == torch.float32 and _before(other, conv, order):
            ops, residual = [*ops, nxt], other
            nxt = _next_in_chain(nxt, group)
    if nxt is not None and (activation := _activation(nxt)) is not None:
        ops.append(nxt)
    return Epilogue(ops, names, eps, activation, residual) if ops else None


def _activation(op: KilnOp) -> tuple | None:
    if op.name == "kiln.relu":
        return ("clamp", 0.0, None)
    if op.name == "kiln.clamp":
        return ("clamp", op.opt("min"), op.opt("max"))
    if op.name == "kiln.silu":
        return ("silu",)
    return None


def _next_in_chain(op: KilnOp, group: Any) -> KilnOp | None:
    """The only user of `op`'s result, when it is in `group` (any group when None)."""
    uses = list(op.results[0].uses)
    if len(uses) != 1:
        return None
    user = uses[0].operation
    return user if group is None or user.attributes.get("group") == group else None


def _before(value: Any, conv: KilnOp, order: dict[Any, int]) -> bool:
    """Whether `value` exists when `conv` runs (a block argument, or made by an earlier op)."""
    owner = value.owner
    return owner not in order or order[owner] < order[conv]


def param_name(value: Any) -> str | None:
    """The parameter a convolution's weight is: a `kiln.param`, or a reshape of one (a conv1d
    is captured as a conv2d of height 1 on its weight reshaped to [O, I, 1, K])."""
    owner = value.owner
    if getattr(owner, "name", None) == "kiln.reshape":
        owner = owner.operands[0].owner
    return owner.opt("name") if isinstance(owner, ParamOp) else None


def _site(conv: Conv2dOp, weight: str, sizes: dict[int, int], order: dict[Any, int],
          options: ConvOptions, lanes: int) -> tuple[DirectConv | None, str]:
    if not alone(conv, sizes):
        return None, "library: fused with other ops"
    if any(dtypes.dtype_of(v.type) != torch.float32 for v in [*conv.operands, conv.results[0]]):
        return None, "library: not float32"
    (n, ci, h, w), (co, _, kh, kw) = dtypes.shape_of(conv.operands[0].type), dtypes.shape_of(conv.operands[1].type)
    shape = ConvShape(n, ci, h, w, co, kh, kw, tuple(conv.opt("stride")), tuple(conv.opt("padding")),
                      tuple(conv.opt("dilation")), int(conv.opt("groups")))
    if not use_direct(shape, options, lanes):
        return None, f"library: {shape.macs} multiply-adds, outside the rule (policy {options.policy})"
    has_bias = len(conv.operands) > 2
    bias = conv.operands[2].owner.opt("name") if has_bias and isinstance(conv.operands[2].owner, ParamOp) else None
    epilogue = _epilogue(conv, order) if bias is not None or not has_bias else None
    cb = 1 if shape.depthwise else channel_block(co // shape.groups, lanes)
    try:  # scheduled here, so a shape the schedule cannot take stays on the library
        folds = epilogue is not None and epilogue.names is not None
        func = conv_direct_func(shape, has_bias or folds, lanes, options.threads,
                                epilogue.activation if epilogue else None,
                                residual=epilogue is not None and epilogue.residual is not None)
    except Exception as exc:  # noqa: BLE001 - any schedule error means: not this kernel
        return None, f"library: the direct schedule failed ({type(exc).__name__})"
    kind = "depthwise" if shape.depthwise else f"cb={cb} mt={pixel_tile(cb, lanes, shape.out_hw)}"
    folded = " + " + "+".join(op.name.removeprefix("kiln.") for op in epilogue.ops) if epilogue else ""
    site = DirectConv(shape, cb, weight, bias, func, epilogue)
    return site, f"direct conv{folded}: {kind}, {shape.macs} MACs"
