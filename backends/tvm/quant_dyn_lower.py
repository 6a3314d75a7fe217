"""`int8_dyn` layers in the TVM lowering: the activation's quantize pair folds into the kernel.

The quantization pass writes an `int8_dyn` layer as (see `passes/quant_apply.materialize`)

    qa, sa = kiln.quantize(x) {format = "int8", axis = -1}      # per-row dynamic scale
    xa     = kiln.dequantize(qa, sa) {format = "int8"}
    w      = kiln.dequantize(codes, sw) {format = "int8_dyn", shape = [N, K]}
    y      = kiln.linear(xa, w, b)         (or kiln.matmul(xa, w) with w [K, N])

which the interpreter runs as the exact emulation. Here the four ops become one call of
the `int8_dyn` kernel (`quant_vnni.py`) on `x`: the kernel quantizes the rows itself, with
the same rounding, and sums in int32. The weight is bound at load time as derived
parameters (the codes in the kernel's layout and the compensation) and the scales as they
are; the codes parameter itself is not bound (`QuantLowering.replaced`).

A layer that does not have exactly this shape (the activation pair shared or inside a
multi-op fusion group, a batched weight, a conv2d) keeps the ordinary paths: the fused
weight-only kernel reads the int8 codes, the activation pair runs on the reference path,
and the numbers are the same emulation.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from tvm import relax
from xdsl.ir import SSAValue

from backends.tvm import quant_vnni as qv
from backends.tvm.groups import alone
from backends.tvm.quant_matmul import MatmulShape
from ir import dtypes
from ir.core import KilnOp
from ir.ops.quant import DequantizeOp, QuantizeOp
from ir.quant.registry import DYNAMIC_ACT

R = relax.op
DYN_PATHS = (qv.VNNI_PATH, qv.PLAIN_PATH)


def activation_pair(user: KilnOp, act_format: str, sizes: dict[int, int]) -> tuple[QuantizeOp, DequantizeOp] | None:
    """The (quantize, dequantize) feeding `user`'s activation operand, if the kernel can
    take them over: per-row dynamic, along the last axis, read by contractions only."""
    deq = user.operands[0].owner
    if not isinstance(deq, DequantizeOp) or deq.opt("shape") is not None:
        return None
    quant = deq.codes.owner
    if not isinstance(quant, QuantizeOp) or deq.opt("format") != act_format or quant.opt("format") != act_format:
        return None
    x = quant.input
    rank = len(dtypes.shape_of(x.type))
    if (quant.opt("scale") is not None or quant.opt("axis") % rank != rank - 1
            or dtypes.dtype_of(x.type) != torch.float32):
        return None
    if any(u.operation is not deq for r in quant.results for u in r.uses):
        return None  # several int8_dyn consumers may share the pair (CSE); `settle` checks them
    if not (alone(quant, sizes) and alone(deq, sizes)):
        return None
    return quant, deq


def plan_dynamic(site: Any, sizes: dict[int, int]) -> None:
    """Turn a fused `int8_dyn` site into the kernel's path when every consumer qualifies."""
    act_format = DYNAMIC_ACT.get(site.layout.format)
    if act_format is None:
        return
    pairs = {}
    for user, shape in site.consumers.items():
        pair = activation_pair(user, act_format, sizes) if shape.batch_dims == 0 else None
        if pair is None:
            site.reason = "int8_dyn: activation quantize not foldable here; weight-only kernel on the emulated activation"
            return
        pairs[user] = pair
    site.act_ops = pairs
    site.path = qv.VNNI_PATH if qv.has_vnni() else qv.PLAIN_PATH
    site.reason = "" if site.path == qv.VNNI_PATH else "host CPU has no AVX-512 VNNI (avx512vnni)"


def settle(sites: list[Any]) -> None:
    """Undo the kernel path where a folded activation pair has a reader outside it.

    The activation pair is shared when common subexpression elimination merged the
    identical quantizes of q/k/v projections: it folds when every reader of it runs the
    kernel (each quantizes the rows itself, M*K work against M*K*N), else it must be
    computed, and the sites reading it revert to the weight-only kernel."""
    changed = True
    while changed:
        changed = False
        kernel_users = {u for s in sites if s.path in DYN_PATHS for u in s.act_ops}
        for site in sites:
            if site.path not in DYN_PATHS:
                continue
            if any(u.operation not in kernel_users or u.index != 0
                   for _, deq in site.act_ops.values() for u in deq.result.uses):
                site.path, site.act_ops, changed = "fused-tir", {}, True
                site.reason = "int8_dyn: the activation's quantize is also read elsewhere; weight-only kernel"


def _pack(name: str, n: int, k: int, nv: int, vnni: bool, params: dict) -> torch.Tensor:
    return qv.pack(params[name], n, k, nv, vnni)


def _comp(name: str, n: int, k: int, nv: int, params: dict) -> torch.Tensor:
    return qv.compensation(params[name], n, k, nv)


def _zeros(n: int, params: dict) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float32)


def emit_dynamic(bb: relax.BlockBuilder, site: Any, op: KilnOp, env: dict[SSAValue, Any], derived: Any,
                 threads: int, bias: SSAValue | None) -> relax.Expr:
    """One kernel call for consumer `op` of `site`; returns the output in `op`'s shape."""
    if derived is None:
        raise ValueError("int8_dyn lowering needs the load-time parameters (pass `derived` to QuantLowering.emit)")
    shape: MatmulShape = site.consumers[op]
    quant, _ = site.act_ops[op]
    m, k, n = shape.m, shape.k, shape.n
    _, nv = qv.tiles(m, n)
    codes_name = str(site.dequant.codes.owner.opt("name"))
    nvec = qv.padded_vectors(n, nv)
    vnni = site.path == qv.VNNI_PATH
    key = (codes_name, nv)
    cache = site.__dict__.setdefault("_derived", {})
    if key not in cache:
        wshape = [nvec, math.ceil(k / 4), 64] if vnni else [nvec, math.ceil(k / 4) * 4, 16]
        cache[key] = (
            derived.add(f"{codes_name}.{'vnni' if vnni else 'rows'}{nv}",
                        functools.partial(_pack, codes_name, n, k, nv, vnni), wshape, "int8"),
            derived.add(f"{codes_name}.comp{nv}", functools.partial(_comp, codes_name, n, k, nv),
                        [nvec * 16], "int32"),
        )
    packed, comp = cache[key]
    b = env[bias] if bias is not None else derived.add(f"{codes_name}.zero_bias", functools.partial(_zeros, n),
                                                      [n], "float32")
    func = qv.int8_dyn_func(m, k, n, bias is not None, vnni, threads)
    dims = "x".join(map(str, (m, k, n)))
    gv = bb.add_func(func, f"kiln_qmm_int8_dyn_{dims}" + ("_bias" if bias is not None else ""))
    x = bb.emit(R.reshape(env[quant.input], [m, k]))
    y = bb.emit(relax.call_tir(gv, [x, packed, comp, env[site.dequant.scales], b],
                               relax.TensorType([m, n], "float32")))
    return bb.emit(R.reshape(y, list(shape.out_shape)))
