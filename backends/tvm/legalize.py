"""Kiln's legalizations for transcendental ops: vectorizable fast-math TE instead of libm.

TVM's LLVM backend lowers ``exp``, ``erf``, ``tanh`` and ``sigmoid`` to scalar ``expf`` /
``erff`` calls, even inside a vectorized loop: a softmax over 131k floats spends ~450 us in
libm against 65 us for eager torch. TOPI ships polynomial versions (``topi.fast_exp``,
``fast_erf``, ``fast_tanh``) built from plain arithmetic and bit casts, which LLVM
vectorizes to AVX-512. Their error is at float32 rounding level (tests check 1e-5 against
torch), well inside the 1e-4 budget Kiln holds TVM results to.

These replace Relax's default legalizations through ``LegalizeOps(customize_legalize_map)``
so the swap is local to Kiln's pipeline: no global TVM registration changes. Other dtypes
than float32 fall through to Relax's own legalization.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, te, tirx, topi

LegalizeFunc = Callable[[relax.BlockBuilder, relax.Call], relax.Expr]


def _default(op_name: str) -> LegalizeFunc:
    return tvm.ir.Op.get(op_name).get_attr("FLegalize")


def _f32(call: relax.Call) -> bool:
    ty = call.args[0].ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"


def _const(value: float) -> tirx.Expr:
    return tirx.const(value, "float32")


def _sigmoid(x: te.Tensor) -> te.Tensor:
    e = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: _const(1.0) / (_const(1.0) + e(*i)), name="sigmoid")


def _gelu(x: te.Tensor) -> te.Tensor:
    erf = topi.fast_erf(topi.multiply(x, _const(0.5**0.5)))
    return te.compute(
        x.shape, lambda *i: x(*i) * (_const(0.5) + _const(0.5) * erf(*i)), name="gelu"
    )


def _gelu_tanh(x: te.Tensor) -> te.Tensor:
    c = (2.0 / 3.141592653589793) ** 0.5
    inner = te.compute(
        x.shape,
        lambda *i: _const(c) * (x(*i) + _const(0.044715) * x(*i) * x(*i) * x(*i)),
        name="gelu_inner",
    )
    t = topi.fast_tanh(inner)
    return te.compute(x.shape, lambda *i: _const(0.5) * x(*i) * (_const(1.0) + t(*i)), name="gelu")


def _silu(x: te.Tensor) -> te.Tensor:
    s = _sigmoid(x)
    return te.compute(x.shape, lambda *i: x(*i) * s(*i), name="silu")


def _softmax(x: te.Tensor, axis: int) -> te.Tensor:
    # One reciprocal per row and a multiply per element: a vector divide is ~5x a multiply.
    axis = axis % len(x.shape)
    m = topi.max(x, axis=axis, keepdims=True)
    e = topi.fast_exp(topi.subtract(x, m))
    s = topi.sum(e, axis=axis, keepdims=True)
    r = te.compute(s.shape, lambda *i: _const(1.0) / s(*i), name="softmax_rcp")
    return topi.multiply(e, r)


def _log_softmax(x: te.Tensor, axis: int) -> te.Tensor:
    axis = axis % len(x.shape)
    m = topi.max(x, axis=axis, keepdims=True)
    s = topi.sum(topi.fast_exp(topi.subtract(x, m)), axis=axis, keepdims=True)
    lse = te.compute(s.shape, lambda *i: m(*i) + tirx.log(s(*i)), name="log_softmax_lse")
    return topi.subtract(x, lse)


def _unary(op_name: str, te_func: Callable[[te.Tensor], te.Tensor], hint: str) -> LegalizeFunc:
    fallback = _default(op_name)

    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if not _f32(call):
            return fallback(bb, call)
        return bb.call_te(te_func, call.args[0], primfunc_name_hint=hint)

    return legalize


def _with_axis(op_name: str, te_func: Callable[[te.Tensor, int], te.Tensor], hint: str):
    fallback = _default(op_name)

    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if not _f32(call):
            return fallback(bb, call)
        return bb.call_te(te_func, call.args[0], int(call.attrs.axis), primfunc_name_hint=hint)

    return legalize


def fast_math_legalizations() -> dict[str, LegalizeFunc]:
    """The ``customize_legalize_map`` for ``relax.transform.LegalizeOps``."""
    return {
        "relax.exp": _unary("relax.exp", topi.fast_exp, "fast_exp"),
        "relax.erf": _unary("relax.erf", topi.fast_erf, "fast_erf"),
        "relax.tanh": _unary("relax.tanh", topi.fast_tanh, "fast_tanh"),
        "relax.sigmoid": _unary("relax.sigmoid", _sigmoid, "sigmoid"),
        "relax.nn.gelu": _unary("relax.nn.gelu", _gelu, "gelu"),
        "relax.nn.gelu_tanh": _unary("relax.nn.gelu_tanh", _gelu_tanh, "gelu_tanh"),
        "relax.nn.silu": _unary("relax.nn.silu", _silu, "silu"),
        "relax.nn.softmax": _with_axis("relax.nn.softmax", _softmax, "softmax"),
        "relax.nn.log_softmax": _with_axis("relax.nn.log_softmax", _log_softmax, "log_softmax"),
    }
