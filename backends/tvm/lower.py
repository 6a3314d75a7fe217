"""Lower a kiln Program to a Relax IRModule with BlockBuilder: one table entry per op.

Contractions (linear, matmul, conv2d, attention, embedding) go to the library path
(`library.emit_*`: packed functions over torch/BLAS), except linears on parameter weights
that `dense_packed.py`'s measured rule gives a TIR kernel over a weight packed at load
time. Everything else becomes Relax ops that are legalized to TIR and scheduled for this
CPU (`schedule.py`). An op with no
entry runs its kiln reference implementation through a packed function (`reference.py`),
so no verified program fails to lower; those ops are reported.

Parameters become trailing Relax function parameters, bound once at load time, so a
build artifact does not depend on the weights and one cache entry serves every model
with the same graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tvm import relax
from xdsl.dialects import func
from xdsl.ir import SSAValue

from backends.tvm import library
from backends.tvm.attention_tir import AttentionOptions, AttentionPlan
from backends.tvm.conv_direct import ConvOptions
from backends.tvm.conv_plan import ConvPlan
from backends.tvm.dense_packed import DenseOptions, DensePlan
from backends.tvm.reference import emit_reference
from ir import dtypes
from ir.core import KilnOp
from ir.ops.elementwise import result_dtype
from ir.ops.sources import ConstantOp, ParamOp
from ir.program import Program

Emit = Callable[[relax.BlockBuilder, KilnOp, list[Any]], Any]
R = relax.op


@dataclass
class Lowered:
    module: Any  # tvm.IRModule
    param_names: list[str]  # trailing function parameters, in order
    reference_ops: list[str] = field(default_factory=list)  # ops run through the reference path
    # Quantized weight -> how its `kiln.dequantize` runs (`quant_lower.py`: fused-tir, ...).
    quant_paths: dict[str, str] = field(default_factory=dict)
    # Parameters computed from the model's parameters at load time (e.g. batch-norm scale),
    # appended after `param_names`: (name, function of the params dict).
    derived: list[tuple[str, Callable[[dict], torch.Tensor]]] = field(default_factory=list)
    grouped: bool = False  # the fuse pass decided groups (even all-singleton ones)
    # Linear weight -> packed TIR kernel or library, and why (`dense_packed.py`).
    dense_paths: dict[str, str] = field(default_factory=dict)
    # Relax variable name of each value `map-memory` placed in its arena -> byte offset
    # (`arena.py` finds the allocation behind each name after CallTIRRewrite).
    arena_offsets: dict[str, int] = field(default_factory=dict)

    def bind(self, params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The trailing arguments of `main`, in order, for these parameter values."""
        with torch.no_grad():
            return [params[n] for n in self.param_names] + [fn(params) for _, fn in self.derived]


class Derived:
    """Collects load-time parameters while lowering; see `Lowered.derived`.

    Inside a fused group's function (`groups.py`) a derived parameter is a parameter of
    that function too: `captured` then records (local var, main var) pairs for the call.
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, Callable[[dict], torch.Tensor], relax.Var]] = []
        self.captured: list[tuple[relax.Var, relax.Var]] | None = None

    def add(self, name: str, fn: Callable[[dict], torch.Tensor], shape: list[int], dtype: str) -> relax.Var:
        ty = relax.TensorType(shape, dtype)
        var = relax.Var(f"d{len(self.items)}", ty)
        self.items.append((name, fn, var))
        if self.captured is None:
            return var
        local = relax.Var(f"gd{len(self.captured)}", ty)
        self.captured.append((local, var))
        return local


def _dt(value: SSAValue) -> str:
    return str(dtypes.dtype_of(value.type)).removeprefix("torch.").replace("bool", "bool")


def _const(value: float | int | bool, dtype: str) -> relax.Expr:
    return tensor_const(np.array(value, dtype=dtype))


def tensor_const(array: np.ndarray) -> relax.Expr:
    """A Relax constant of the array's own dtype. TVM 0.27's `relax.const` turns a 0-d
    int64 array into an int32 constant unless told the dtype (then `x + 1` on int64 ids
    fails to type-check), so the dtype is always passed."""
    return relax.const(array, str(array.dtype))


# ---- the table ---------------------------------------------------------------------------
UNARY: dict[str, Callable[[relax.Expr], relax.Expr]] = {
    "kiln.relu": R.nn.relu,
    "kiln.silu": R.nn.silu,
    "kiln.sigmoid": R.sigmoid,
    "kiln.tanh": R.tanh,
    "kiln.exp": R.exp,
    "kiln.log": R.log,
    "kiln.neg": R.negative,
    "kiln.abs": R.abs,
    "kiln.sqrt": R.sqrt,
    "kiln.rsqrt": R.rsqrt,
    "kiln.erf": R.erf,
    "kiln.sin": R.sin,
    "kiln.cos": R.cos,
    "kiln.logical_not": R.logical_not,
}
BINARY: dict[str, Callable[[relax.Expr, relax.Expr], relax.Expr]] = {
    "kiln.add": R.add,
    "kiln.sub": R.subtract,
    "kiln.mul": R.multiply,
    "kiln.div": R.divide,
    "kiln.maximum": R.maximum,
    "kiln.minimum": R.minimum,
    "kiln.logical_and": R.logical_and,
    "kiln.logical_or": R.logical_or,
    "kiln.eq": R.equal,
    "kiln.ne": R.not_equal,
    "kiln.lt": R.less,
    "kiln.le": R.less_equal,
    "kiln.gt": R.greater,
    "kiln.ge": R.greater_equal,
}
TABLE: dict[str, Emit] = {}


def lowers(*names: str) -> Callable[[Emit], Emit]:
    def register(fn: Emit) -> Emit:
        for n in names:
            TABLE[n] = fn
        return fn

    return register


for _name, _fn in UNARY.items():
    TABLE[_name] = lambda bb, op, a, _fn=_fn: bb.emit(_fn(a[0]))
for _name, _fn in BINARY.items():
    TABLE[_name] = lambda bb, op, a, _fn=_fn: bb.emit(_fn(*_promote(bb, op, a)))


def _promote(bb: relax.BlockBuilder, op: KilnOp, args: list[Any]) -> list[Any]:
    """Relax wants equal dtypes; kiln follows torch's promotion, so cast to the result's dtype."""
    if op.name in ("kiln.eq", "kiln.ne", "kiln.lt", "kiln.le", "kiln.gt", "kiln.ge"):
        target = str(result_dtype(*(o.type for o in op.operands))).removeprefix("torch.")
    else:
        target = _dt(op.results[0])
    return [a if _dt(o) == target else bb.emit(R.astype(a, target)) for a, o in zip(args, op.operands)]


@lowers("kiln.gelu")
def _gelu(bb, op, a):
    return bb.emit(R.nn.gelu_tanh(a[0]) if op.opt("approximate") == "tanh" else R.nn.gelu(a[0]))


# Exponents a pow of a float tensor is rewritten for: LLVM lowers `power` to a scalar `powf`
# call per element. GPT-2's tanh GELU cubes its input (`torch.pow(x, 3.0)`): that group ran
# 46 us on 32x256 elements, the rest of the layer's elementwise work a few us.
_POW_AS_PRODUCT = {2.0, 3.0, 4.0}


@lowers("kiln.pow")
def _pow(bb, op, a):
    """`x ** c` for a scalar constant c: 2, 3 and 4 on floats as multiplies, 0.5 as `sqrt`
    (each within a rounding step of `powf`), any c >= 0 on integers as products by squaring
    (exact, and `power` is float-only); other exponents keep `power`."""
    exponent = _scalar_constant(op.operands[1])
    floating = _dt(op.result).startswith(("float", "bfloat"))
    if floating:
        rewrite = exponent == 0.5 or exponent in _POW_AS_PRODUCT
    else:
        rewrite = exponent is not None and exponent >= 0 and exponent.is_integer()
    if not rewrite:
        return bb.emit(R.power(*_promote(bb, op, a)))
    (x,) = _promote(bb, op, a[:1])  # the exponent is folded into the code, never read
    return bb.emit(R.sqrt(x)) if exponent == 0.5 else _product_power(bb, x, int(exponent))


def _product_power(bb, x, n: int):
    """x ** n by squaring: log2(n) squares and a multiply per set bit."""
    result, base = None, x
    while n:
        if n & 1:
            result = base if result is None else bb.emit(R.multiply(result, base))
        n >>= 1
        if n:
            base = bb.emit(R.multiply(base, base))
    return result if result is not None else bb.emit(R.ones_like(x))


def _scalar_constant(value: SSAValue) -> float | None:
    """The value of a 0-d (or one-element) `kiln.constant`, else None."""
    if not isinstance(value.owner, ConstantOp):
        return None
    tensor = value.owner.to_tensor()
    return float(tensor.item()) if tensor.numel() == 1 else None


@lowers("kiln.reciprocal")
def _reciprocal(bb, op, a):
    return bb.emit(R.divide(_const(1, _dt(op.result)), a[0]))


@lowers("kiln.where")
def _where(bb, op, a):
    target = _dt(op.result)
    lhs, rhs = (_where_branch(bb, x, o, target) for x, o in zip(a[1:], op.operands[1:]))
    return bb.emit(R.where(a[0], lhs, rhs))


def _where_branch(bb, x, operand: SSAValue, target: str):
    """A scalar constant branch becomes `R.full`: legalized `where` would otherwise take
    the constant as a 0-d tensor argument, which FuseTIR rejects in a fused group."""
    if isinstance(operand.owner, ConstantOp) and len(dtypes.shape_of(operand.type)) == 0:
        value = tensor_const(np.array(operand.owner.to_tensor().item(), dtype=target))
        return bb.emit(R.full(relax.ShapeExpr([]), value, target))
    return x if _dt(operand) == target else bb.emit(R.astype(x, target))


@lowers("kiln.cast")
def _cast(bb, op, a):
    return bb.emit(R.astype(a[0], _dt(op.result)))


@lowers("kiln.clamp")
def _clamp(bb, op, a):
    x, dt = a[0], _dt(op.result)
    if op.opt("min") is not None:
        x = bb.emit(R.maximum(x, _const(op.opt("min"), dt)))
    if op.opt("max") is not None:
        x = bb.emit(R.minimum(x, _const(op.opt("max"), dt)))
    return x


@lowers("kiln.linear")
def _linear(bb, op, a):
    return library.emit_linear(bb, a[0], a[1], a[2] if len(a) > 2 else None)


@lowers("kiln.matmul")
def _matmul(bb, op, a):
    return library.emit_matmul(bb, a[0], a[1])


@lowers("kiln.conv2d")
def _conv2d(bb, op, a):
    return library.emit_conv2d(bb, a[0], a[1], a[2] if len(a) > 2 else None, stride=op.opt("stride"),
                               padding=op.opt("padding"), dilation=op.opt("dilation"), groups=op.opt("groups"))


@lowers("kiln.attention")
def _attention(bb, op, a):
    return library.emit_sdpa(bb, a[0], a[1], a[2], causal=bool(op.opt("causal")),
                             mask=a[3] if len(a) > 3 else None, scale=op.opt("scale"))


@lowers("kiln.embedding")
def _embedding(bb, op, a):
    return library.emit_embedding(bb, a[1], a[0])


@lowers("kiln.softmax")
def _softmax(bb, op, a):
    return bb.emit(R.nn.softmax(a[0], op.opt("dim")))


@lowers("kiln.log_softmax")
def _log_softmax(bb, op, a):
    return bb.emit(R.nn.log_softmax(a[0], op.opt("dim")))


def _norm_axes(op: KilnOp) -> list[int]:
    rank = len(dtypes.shape_of(op.operands[0].type))
    return list(range(rank - op.opt("ndims"), rank))


@lowers("kiln.layer_norm")
def _layer_norm(bb, op, a):
    shape = dtypes.shape_of(op.operands[0].type)[-op.opt("ndims"):]
    dt = _dt(op.result)
    present = iter(a[1:])
    # ones/zeros as ops, not tensor constants: FuseTIR rejects constants in a fused group
    gamma = next(present) if op.weight is not None else bb.emit(R.ones(relax.ShapeExpr(list(shape)), dt))
    beta = next(present) if op.bias is not None else bb.emit(R.zeros(relax.ShapeExpr(list(shape)), dt))
    return bb.emit(R.nn.layer_norm(a[0], gamma, beta, _norm_axes(op), op.opt("eps")))


@lowers("kiln.rms_norm")
def _rms_norm(bb, op, a):
    shape = dtypes.shape_of(op.operands[0].type)[-op.opt("ndims"):]
    weight = a[1] if len(a) > 1 else bb.emit(R.ones(relax.ShapeExpr(list(shape)), _dt(op.result)))
    return bb.emit(R.nn.rms_norm(a[0], weight, _norm_axes(op), op.opt("eps")))


def _batch_norm(bb, op, a, derived: Derived):
    """x * scale + shift with per-channel scale and shift computed once, at load time.

    The statistics are parameters, so folding them here saves an rsqrt per element and
    leaves a plain multiply-add that fuses into the surrounding elementwise kernel.
    """
    x = a[0]
    sources = [o.owner for o in op.operands[1:]]
    rank = len(dtypes.shape_of(op.operands[0].type))
    channels = dtypes.shape_of(op.operands[1].type)[0]
    shape, dt, eps = [channels] + [1] * (rank - 2), _dt(op.result), op.opt("eps")
    if all(isinstance(s, ParamOp) for s in sources):
        mean, var, w, b = (s.opt("name") for s in sources)

        def scale_of(p):
            return (p[w] / torch.sqrt(p[var] + eps)).reshape(shape)

        scale = derived.add(f"{w}.bn_scale", scale_of, shape, dt)
        shift = derived.add(f"{w}.bn_shift", lambda p: p[b].reshape(shape) - p[mean].reshape(shape) * scale_of(p), shape, dt)
        return bb.emit(R.add(R.multiply(x, scale), shift))
    mean, var, w, b = a[1:]
    scale = bb.emit(R.multiply(w, R.rsqrt(R.add(var, _const(eps, dt)))))
    shift = bb.emit(R.subtract(b, R.multiply(mean, scale)))
    return bb.emit(R.add(R.multiply(x, R.reshape(scale, shape)), R.reshape(shift, shape)))


@lowers("kiln.reshape")
def _reshape(bb, op, a):
    return bb.emit(R.reshape(a[0], list(op.opt("shape"))))


@lowers("kiln.permute")
def _permute(bb, op, a):
    return bb.emit(R.permute_dims(a[0], list(op.opt("dims"))))


@lowers("kiln.slice")
def _slice(bb, op, a):
    rank = len(dtypes.shape_of(op.operands[0].type))
    return bb.emit(R.strided_slice(a[0], [op.opt("dim") % rank], [op.opt("start")], [op.opt("end")],
                                   [op.opt("step")]))


@lowers("kiln.expand")
def _expand(bb, op, a):
    return bb.emit(R.broadcast_to(a[0], list(op.opt("shape"))))


@lowers("kiln.concat")
def _concat(bb, op, a):
    return bb.emit(R.concat(a, op.opt("dim")))


_REDUCE = {"sum": R.sum, "mean": R.mean, "max": R.max, "min": R.min, "prod": R.prod}


@lowers("kiln.reduce")
def _reduce(bb, op, a):
    return bb.emit(_REDUCE[op.opt("kind")](a[0], list(op.opt("dims")), bool(op.opt("keepdim"))))


@lowers("kiln.pool2d")
def _pool2d(bb, op, a):
    kwargs = dict(pool_size=op.opt("kernel"), strides=op.opt("stride"), padding=op.opt("padding"))
    if op.opt("kind") == "max":
        return bb.emit(R.nn.max_pool2d(a[0], **kwargs))
    return bb.emit(R.nn.avg_pool2d(a[0], count_include_pad=True, **kwargs))


# ---- the driver of the table --------------------------------------------------------------
def emit_op(bb: relax.BlockBuilder, op: KilnOp, args: list[Any], derived: Derived, reference_ops: list[str]) -> Any:
    """Emit one kiln op; returns its Relax value (a tuple for multi-result ops)."""
    if op.name == "kiln.batch_norm":
        return _batch_norm(bb, op, args, derived)
    emit = TABLE.get(op.name)
    if emit is None:
        reference_ops.append(op.name)
        return emit_reference(bb, op, args)
    return emit(bb, op, args)


def bind_results(bb: relax.BlockBuilder, op: KilnOp, out: Any, env: dict[SSAValue, Any]) -> None:
    if len(op.results) == 1:
        env[op.results[0]] = out
    else:
        for i, r in enumerate(op.results):
            env[r] = bb.emit(relax.TupleGetItem(out, i))


def lower_program(
    program: Program,
    dense: DenseOptions | None = None,
    conv: ConvOptions | None = None,
    attention: AttentionOptions | None = None,
    threads: int = 2,
) -> Lowered:
    """Relax module with `main(*inputs, *params)` returning a tuple of the outputs.

    Ops that the fusion pass put in one group (`group` attribute) become one Relax
    function marked Primitive, which FuseTIR turns into one PrimFunc: one kernel.
    `threads`: what the quantized matmul kernels are built for (`thread_policy.py`).
    """
    from backends.tvm.arena import planned_offsets
    from backends.tvm.groups import emit_group, plan_steps
    from backends.tvm.knobs import lowers_to_tir
    from backends.tvm.quant_lower import QuantLowering

    fn: func.FuncOp = program.forward
    block = fn.body.block
    bb = relax.BlockBuilder()
    inputs = [relax.Var(f"in{i}", _tensor_type(arg)) for i, arg in enumerate(block.args)]
    param_ops = [op for op in block.ops if isinstance(op, ParamOp)]
    param_names = list(dict.fromkeys(op.opt("name") for op in param_ops))
    first = {op.opt("name"): op for op in reversed(param_ops)}
    params = {name: relax.Var(f"p{i}", _tensor_type(first[name].result)) for i, name in enumerate(param_names)}
    reference_ops: list[str] = []
    derived = Derived()
    quant = QuantLowering(block, threads)
    dense_plan = DensePlan.of(block, dense)  # linears on packed weights; those bind packed only
    conv_plan = ConvPlan.of(block, conv)  # convolutions on the direct kernel, same idea
    attention_plan = AttentionPlan.of(block, attention)  # small attention as one TIR kernel
    bound = [n for n in param_names if n not in dense_plan.replaced | conv_plan.replaced | quant.replaced]
    with bb.function("main"):  # parameters are given at the end, once derived ones are known
        with bb.dataflow():
            env: dict[SSAValue, Any] = dict(zip(block.args, inputs))
            for op in block.ops:
                if isinstance(op, ParamOp):
                    env[op.result] = params[op.opt("name")]
                elif isinstance(op, ConstantOp):
                    env[op.result] = tensor_const(op.to_tensor().numpy())
            for step in plan_steps(block):
                step = conv_plan.remaining(step)  # less a batch norm (+ activation) folded into its conv
                if not step:
                    continue
                if quant.emit(bb, step, env, derived):  # packed weights: fused into their matmuls
                    continue
                if dense_plan.emit(bb, step, env, derived) or conv_plan.emit(bb, step, env, derived):
                    continue
                if attention_plan.emit(bb, step, env):
                    continue
                # A single-op group that becomes TIR is wrapped too, so every scheduled
                # kernel has a stable name (`kiln_group_<id>`) that tuned configs refer to.
                if len(step) > 1 or ("group" in step[0].attributes and lowers_to_tir(step)):
                    emit_group(bb, step, env, derived, reference_ops)
                    continue
                op = step[0]
                bind_results(bb, op, emit_op(bb, op, [env[v] for v in op.operands], derived, reference_ops), env)
            ret = next(op for op in block.ops if isinstance(op, func.ReturnOp))
            gv = bb.emit_output(relax.Tuple([env[v] for v in ret.operands]))
        all_params = inputs + [params[n] for n in bound] + [var for _, _, var in derived.items]
        bb.emit_func_output(gv, params=all_params)
    grouped = any("group" in op.attributes for op in block.ops)
    arena = {env[v].name: o for v, o in planned_offsets(block).items() if isinstance(env.get(v), relax.Var)}
    return Lowered(bb.get(), bound, reference_ops, quant.paths, [(n, fn) for n, fn, _ in derived.items], grouped,
                   {**dense_plan.paths, **conv_plan.paths, **attention_plan.paths}, arena)


def tensor_type(value: SSAValue) -> relax.TensorType:
    return relax.TensorType(list(dtypes.shape_of(value.type)), _dt(value))


_tensor_type = tensor_type
