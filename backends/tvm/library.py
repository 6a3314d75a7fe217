"""The library path: contractions run as torch/MKL kernels called from the Relax VM.

Untuned TIR matmuls are 10-100x slower than BLAS on this CPU, and writing a GEMM schedule
that matches MKL is a project of its own. So, like Inductor calling ATen and TVM dispatching
to cuBLAS, Kiln hands contractions (linear, matmul, conv2d, attention, embedding gathers)
to torch: each is a packed function registered in TVM's FFI registry under ``kiln.*`` and
called from Relax with ``R.call_dps_packed``. The VM passes TVM tensors; the functions are
wrapped with ``tvm_ffi.convert_func(..., tensor_cls=torch.Tensor)`` so the DLPack exchange
to ``torch.Tensor`` happens in C before the Python body runs (zero-copy, ~0.4 us per
tensor, against ~1.3 us for ``torch.from_dlpack`` in Python).

Calling convention: destination-passing style, ``f(*inputs, *attrs, out)``. Attributes are
Relax values that the FFI delivers as Python objects: ``relax.prim_value(int)`` -> ``int``,
``relax.prim_value(float)`` -> ``float``, ``relax.ShapeExpr`` -> a tuple subclass. Optional
operands (bias, mask) select a different function name rather than passing a null.

The ``emit_*`` helpers build the call in a ``relax.BlockBuilder`` and infer the output type;
the lowering should use them rather than spelling names by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import tvm_ffi
from tvm import relax

# ---------------------------------------------------------------------------------------
# Kernels. Each writes into ``out`` (the VM-allocated destination) and returns nothing.
# ---------------------------------------------------------------------------------------


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    # aten::linear.out folds the bias into the GEMM (addmm) and takes w as [N, K]. Called
    # through torch._C._nn.linear: 2.2 us per tiny call against 4.3 us for
    # addmm(b, x.view(..), w.t(), out=out.view(..)), whose view/t() dispatches cost more
    # than the GEMM at small sizes.
    torch._C._nn.linear(x, w, b, out=out)


def _linear_nobias(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
    torch._C._nn.linear(x, w, None, out=out)


def _matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    torch.matmul(a, b, out=out)


def _conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    out: torch.Tensor,
) -> None:
    # F.conv2d has no out=; oneDNN allocates its result, so one copy is unavoidable here.
    out.copy_(torch.conv2d(x, w, b, tuple(stride), tuple(padding), tuple(dilation), groups))


def _conv2d_nobias(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    out: torch.Tensor,
) -> None:
    out.copy_(torch.conv2d(x, w, None, tuple(stride), tuple(padding), tuple(dilation), groups))


def _attend(q, k, v, out, bshd: int, **kwargs) -> None:
    # bshd: q/k/v/out are [B, S, H, E]; torch wants [B, H, S, E], and a transposed view is
    # free, so the layout change costs nothing here while in Relax it is a copy kernel.
    if bshd:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    r = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
    # No out= in torch's SDPA: one copy into the VM's buffer (~3% of a 8x4x64x64 call).
    out.copy_(r.transpose(1, 2) if bshd else r)


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: int,
    bshd: int,
    out: torch.Tensor,
) -> None:
    # is_causal is top-left aligned (query i sees keys <= i), as in torch.
    _attend(q, k, v, out, bshd, is_causal=bool(causal), scale=scale)


def _sdpa_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    bshd: int,
    out: torch.Tensor,
) -> None:
    # A bool mask keeps True positions; a float mask is added to the scores.
    _attend(q, k, v, out, bshd, attn_mask=mask, scale=scale)


def _sdpa_packed(
    qkv: torch.Tensor, heads: int, scale: float, causal: int, out: torch.Tensor
) -> None:
    # qkv is one projection's output [B, S, 3 * D] (BERT, GPT-2): q, k and v are strided
    # views of it, so no split or transpose kernel runs; the result lands as [B, S, D].
    b, s, d3 = qkv.shape
    hd = d3 // (3 * heads)
    q, k, v = qkv.view(b, s, 3, heads, hd).permute(2, 0, 3, 1, 4)
    r = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=bool(causal), scale=scale
    )
    out.view(b, s, heads, hd).copy_(r.transpose(1, 2))


def _embedding(ids: torch.Tensor, table: torch.Tensor, out: torch.Tensor) -> None:
    torch.index_select(table, 0, ids.reshape(-1), out=out.view(-1, table.shape[1]))


KERNELS: dict[str, Callable[..., None]] = {
    "kiln.linear": _linear,
    "kiln.linear_nobias": _linear_nobias,
    "kiln.matmul": _matmul,
    "kiln.conv2d": _conv2d,
    "kiln.conv2d_nobias": _conv2d_nobias,
    "kiln.sdpa": _sdpa,
    "kiln.sdpa_mask": _sdpa_mask,
    "kiln.sdpa_packed": _sdpa_packed,
    "kiln.embedding": _embedding,
}

_registered = False


def register_library() -> None:
    """Register every ``kiln.*`` kernel in TVM's global function table (idempotent).

    Must run in the process that calls the VM, before the VM is created: the VM resolves
    extern function names when it loads the executable.
    """
    global _registered
    if _registered:
        return
    for name, fn in KERNELS.items():
        packed = tvm_ffi.convert_func(fn, tensor_cls=torch.Tensor)
        tvm_ffi.register_global_func(name, packed, override=True)
    _registered = True


# ---------------------------------------------------------------------------------------
# BlockBuilder helpers: emit the call and infer the output type.
# ---------------------------------------------------------------------------------------


def _shape(expr: relax.Expr) -> list[int]:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise TypeError(f"kiln library call needs a tensor of known shape, got {ty}")
    return [int(d) for d in ty.shape.values]


def _dtype(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def _call(
    bb: relax.BlockBuilder,
    name: str,
    args: list[relax.Expr],
    shape: Sequence[int],
    dtype: str,
) -> relax.Var:
    out_ty = relax.TensorType([int(d) for d in shape], dtype)
    return bb.emit(relax.call_dps_packed(name, args, out_ty))


def emit_linear(
    bb: relax.BlockBuilder, x: relax.Expr, w: relax.Expr, b: relax.Expr | None = None
) -> relax.Var:
    """``x @ w.T + b`` with ``x: [..., K]``, ``w: [N, K]``, ``b: [N]`` (torch's layout)."""
    xs, ws = _shape(x), _shape(w)
    if xs[-1] != ws[1]:
        raise ValueError(f"kiln.linear: x {xs} and weight {ws} disagree on K")
    shape = [*xs[:-1], ws[0]]
    if b is None:
        return _call(bb, "kiln.linear_nobias", [x, w], shape, _dtype(x))
    return _call(bb, "kiln.linear", [x, w, b], shape, _dtype(x))


def emit_matmul(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr) -> relax.Var:
    """``torch.matmul(a, b)`` with batch broadcasting (both operands at least 2-D)."""
    as_, bs = _shape(a), _shape(b)
    if len(as_) < 2 or len(bs) < 2 or as_[-1] != bs[-2]:
        raise ValueError(f"kiln.matmul: shapes {as_} and {bs} do not contract")
    batch = list(torch.broadcast_shapes(tuple(as_[:-2]), tuple(bs[:-2])))
    return _call(bb, "kiln.matmul", [a, b], [*batch, as_[-2], bs[-1]], _dtype(a))


def _pair(value: int | Sequence[int] | None, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return values if len(values) == 2 else (values[0], values[0])


def emit_conv2d(
    bb: relax.BlockBuilder,
    x: relax.Expr,
    w: relax.Expr,
    b: relax.Expr | None = None,
    stride: int | Sequence[int] | None = 1,
    padding: int | Sequence[int] | None = 0,
    dilation: int | Sequence[int] | None = 1,
    groups: int | None = 1,
) -> relax.Var:
    """NCHW ``conv2d`` with OIHW weights, as ``torch.nn.functional.conv2d``.

    ``stride``/``padding``/``dilation`` take an int or a pair; ``None`` means the default.
    """
    stride, padding, dilation = _pair(stride, 1), _pair(padding, 0), _pair(dilation, 1)
    groups = int(groups or 1)
    (n, _, h, wd), (o, _, kh, kw) = _shape(x), _shape(w)
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    attrs = [
        relax.ShapeExpr([int(s) for s in stride]),
        relax.ShapeExpr([int(p) for p in padding]),
        relax.ShapeExpr([int(d) for d in dilation]),
        relax.prim_value(int(groups)),
    ]
    operands = [x, w] if b is None else [x, w, b]
    name = "kiln.conv2d_nobias" if b is None else "kiln.conv2d"
    return _call(bb, name, operands + attrs, [n, o, oh, ow], _dtype(x))


def emit_sdpa(
    bb: relax.BlockBuilder,
    q: relax.Expr,
    k: relax.Expr,
    v: relax.Expr,
    *,
    causal: bool = False,
    mask: relax.Expr | None = None,
    scale: float | None = None,
    layout: str = "bhsd",
) -> relax.Var:
    """Scaled dot-product attention, as ``torch.nn.functional.scaled_dot_product_attention``.

    ``layout="bhsd"``: q/k/v are ``[B, H, L|S, E]`` (torch's). ``layout="bshd"``: they are
    ``[B, L|S, H, E]``, the layout a projection's output has after a free reshape, and the
    result is ``[B, L, H, Ev]``; prefer it, it saves a transpose kernel per operand.
    ``scale`` defaults to ``1/sqrt(E)``. ``mask`` (bool keep-mask or additive float,
    broadcastable to ``[B, H, L, S]``) and ``causal`` are exclusive, as in torch.
    """
    if layout not in ("bhsd", "bshd"):
        raise ValueError(f"kiln.sdpa: layout must be 'bhsd' or 'bshd', got {layout!r}")
    qs, vs = _shape(q), _shape(v)
    scale = float(scale) if scale is not None else qs[-1] ** -0.5
    shape = [*qs[:-1], vs[-1]]
    bshd = relax.prim_value(int(layout == "bshd"))
    if mask is not None:
        if causal:
            raise ValueError("kiln.sdpa: pass either causal=True or a mask, not both")
        args = [q, k, v, mask, relax.prim_value(scale), bshd]
        return _call(bb, "kiln.sdpa_mask", args, shape, _dtype(q))
    args = [q, k, v, relax.prim_value(scale), relax.prim_value(int(causal)), bshd]
    return _call(bb, "kiln.sdpa", args, shape, _dtype(q))


def emit_sdpa_packed(
    bb: relax.BlockBuilder,
    qkv: relax.Expr,
    num_heads: int,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> relax.Var:
    """Multi-head attention on a fused projection ``qkv: [B, S, 3 * D]`` -> ``[B, S, D]``.

    The split into q, k, v (in that order along the last axis) and into heads happens as
    views inside the call: no split, reshape or transpose kernels around it.
    """
    b, s, d3 = _shape(qkv)
    if d3 % (3 * num_heads):
        raise ValueError(f"kiln.sdpa_packed: {d3} is not 3 x {num_heads} heads x head size")
    head = d3 // (3 * num_heads)
    scale = float(scale) if scale is not None else head**-0.5
    args = [qkv, relax.prim_value(int(num_heads)), relax.prim_value(scale)]
    args.append(relax.prim_value(int(causal)))
    return _call(bb, "kiln.sdpa_packed", args, [b, s, d3 // 3], _dtype(qkv))


def emit_embedding(bb: relax.BlockBuilder, ids: relax.Expr, table: relax.Expr) -> relax.Var:
    """Rows of ``table: [V, D]`` gathered by integer ``ids`` of any shape."""
    return _call(
        bb, "kiln.embedding", [ids, table], [*_shape(ids), _shape(table)[1]], _dtype(table)
    )
