"""Attention as one TIR kernel for small heads: `kiln.attention` without the library hop.

Why: the library path calls torch's SDPA through a packed function. For the real-model
suite's shapes (2 x 4 heads x 16 tokens x 16) the arithmetic is ~1 us, but the call costs
10 us causal and 34 us with a boolean mask (torch turns the mask into a float one with
`where` on every call): in GPT-2 that was a third of the model. Measured here (Zen 4, one
thread, 2026-12-04): 5.8 us masked and 5.5 us causal against torch's 34 and 10.5.

The kernel, per (batch, head) and tile of `mt` query rows, all in one PrimFunc:
1. K of this head is transposed once into a small buffer (`kt`), so a score tile is a
   register-blocked outer product: `mt` broadcast query values times a vector of keys;
2. scale, mask (bool keeps, float adds) or causal cut, row max, `fast_exp` (TOPI's
   polynomial, vectorized) and row sum, on the tile's `mt x S` scores kept in a local buffer;
3. `p @ V` as `mt` rows times vectors of V's row, divided by the row sums on write-back.
So the whole row of scores exists at once: this is the exact two-pass softmax, not flash
attention's online rescaling, which is why `use_tir_attention` keeps it to small problems
(the scores tile is `mt x S` floats) and long sequences stay on torch's flash kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from tvm import relax, s_tir, te, tirx, topi

from backends.tvm.dense_packed import MIN_PARALLEL_MACS, OPAQUE
from backends.tvm.groups import alone, group_sizes
from backends.tvm.schedule import SCHEDULE_ATTR
from ir import dtypes
from ir.core import KilnOp
from ir.ops.attention import AttentionOp


@dataclass(frozen=True)
class AttentionShape:
    """Rank-4 operands: q [B, H, L, E], k [Bk, Hk, S, E], v [Bv, Hv, S, Ev]; k, v and the
    mask broadcast over batch and heads (a dim of 1), q does not."""

    q: tuple[int, int, int, int]
    k: tuple[int, int, int, int]
    v: tuple[int, int, int, int]
    mask: tuple[int, ...] | None  # rank 2 to 4, broadcast against [B, H, L, S]
    mask_dtype: str
    causal: bool
    scale: float

    @property
    def macs(self) -> int:
        b, h, length, e = self.q
        return b * h * length * self.k[2] * (e + self.v[3])


def query_tile(length: int) -> int:
    """Query rows per tile: 4 when they divide L (a tile of scores is 4 x S in registers
    and L1), else the largest divisor below."""
    return next(mt for mt in (4, 3, 2, 1) if length % mt == 0)


@lru_cache(maxsize=256)  # every layer of a model asks for the same kernel: schedule it once
def attention_func(a: AttentionShape, threads: int = 2) -> tirx.PrimFunc:
    """Scheduled PrimFunc `(q, k, v, [mask], out [B, H, L, Ev])`."""
    b_, h_, length, e = a.q
    s_len, ev = a.k[2], a.v[3]
    q = te.placeholder(a.q, "float32", name="q")
    k = te.placeholder(a.k, "float32", name="k")
    v = te.placeholder(a.v, "float32", name="v")
    mask = te.placeholder(a.mask, a.mask_dtype, name="mask") if a.mask is not None else None

    def at(shape, *i):  # broadcast a leading dim of size 1
        return tuple(0 if d == 1 else x for d, x in zip(shape, i))

    kt = te.compute((b_, h_, e, s_len), lambda b, h, d, j: k[(*at(a.k[:2], b, h), j, d)], name="kt")
    r = te.reduce_axis((0, e), "e")
    scores = te.compute((b_, h_, length, s_len), lambda b, h, i, j: te.sum(q[b, h, i, r] * kt[b, h, r, j], axis=r),
                        name="scores")
    ninf = tirx.const(-math.inf, "float32")

    def masked(b, h, i, j):
        x = scores[b, h, i, j] * tirx.const(a.scale, "float32")
        if mask is not None:
            m = mask[at(a.mask, *(b, h, i, j)[4 - len(a.mask):])]
            x = tirx.if_then_else(m, x, ninf) if a.mask_dtype == "bool" else x + m
        if a.causal:
            x = tirx.if_then_else(j <= i, x, ninf)
        return x

    logits = te.compute(scores.shape, masked, name="masked")
    j1, j2, j3 = (te.reduce_axis((0, s_len), n) for n in ("j1", "j2", "j3"))
    row_max = te.compute((b_, h_, length), lambda b, h, i: te.max(logits[b, h, i, j1], axis=j1), name="rowmax")
    shifted = te.compute(scores.shape, lambda b, h, i, j: logits[b, h, i, j] - row_max[b, h, i], name="shift")
    p = topi.fast_exp(shifted)
    row_sum = te.compute((b_, h_, length), lambda b, h, i: te.sum(p[b, h, i, j2], axis=j2), name="rowsum")
    pv = te.compute((b_, h_, length, ev),
                    lambda b, h, i, d: te.sum(p[b, h, i, j3] * v[(*at(a.v[:2], b, h), j3, d)], axis=j3), name="pv")
    out = te.compute((b_, h_, length, ev), lambda b, h, i, d: pv[b, h, i, d] / row_sum[b, h, i], name="out")
    args = [q, k, v, *([mask] if mask is not None else []), out]
    return _schedule(te.create_prim_func(args), p.op.name, query_tile(length),
                     parallel=threads > 1 and a.macs >= MIN_PARALLEL_MACS)


def _schedule(func: tirx.PrimFunc, exp_name: str, mt: int, parallel: bool) -> tirx.PrimFunc:
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("masked"))
    sch.compute_inline(sch.get_sblock("shift"))
    b, h, i, d = sch.get_loops(sch.get_sblock("out"))
    tile, _ = sch.split(i, [None, mt])
    head = sch.fuse(b, h)
    sch.vectorize(d)
    for name in ("pv", "rowsum", exp_name, "rowmax", "scores"):
        sch.compute_at(sch.get_sblock(name), tile, preserve_unit_loops=True)
    sch.compute_at(sch.get_sblock("kt"), head, preserve_unit_loops=True)
    # Score tile: the reduction over E outermost, mt rows unrolled, keys as the vector.
    *_, rows, keys, red = sch.get_loops(sch.get_sblock("scores"))
    sch.reorder(red, rows, keys)
    sch.vectorize(keys)
    sch.unroll(rows)
    # p @ V: the keys outermost, mt rows unrolled, V's row as the vector.
    *_, rows, cols, red = sch.get_loops(sch.get_sblock("pv"))
    sch.reorder(red, rows, cols)
    sch.vectorize(cols)
    sch.unroll(rows)
    sch.vectorize(sch.get_loops(sch.get_sblock(exp_name))[-1])
    for name in ("scores", exp_name, "pv", "rowmax", "rowsum"):
        sch.set_scope(sch.get_sblock(name), 0, "local")
    if parallel:
        sch.parallel(head)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "attention").with_attr("op_pattern", OPAQUE)


@dataclass(frozen=True)
class AttentionOptions:
    """`auto` takes attention up to `max_macs_serial` multiply-adds (`max_macs_parallel` on a
    parallel pool); `tir` forces the kernel where the shape allows, `library` never.
    Measured on a shared Zen 4 (2026-12-04), one thread against torch's SDPA on two: 3.7x at
    1M multiply-adds, 3.5x on the zoo encoder's 4M (one model, A/B in one process), 0.5-1x
    from 17M; the line is at 8M."""

    policy: str = "auto"
    max_macs_serial: int = 1 << 23
    max_macs_parallel: int = 1 << 24
    threads: int = 2

    def __post_init__(self) -> None:
        if self.policy not in ("auto", "tir", "library"):
            raise ValueError(f"attention: unknown policy {self.policy!r}; use one of auto, tir, library")


@dataclass
class AttentionPlan:
    """Which attention ops take the TIR kernel: float32, rank 4, alone in their fusion group."""

    sites: dict[KilnOp, tirx.PrimFunc] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # "attention N" -> path taken, and why

    @staticmethod
    def of(block: Any, options: AttentionOptions | None = None) -> AttentionPlan:
        options = options or AttentionOptions()
        plan = AttentionPlan()
        sizes = group_sizes(block)
        for op in (op for op in block.ops if isinstance(op, AttentionOp)):
            shape, why = _shape(op, sizes)
            if shape is not None and options.policy != "library":
                most = options.max_macs_parallel if options.threads > 1 else options.max_macs_serial
                if options.policy == "tir" or shape.macs <= most:
                    plan.sites[op] = attention_func(shape, options.threads)
                    why = f"tir attention: {'x'.join(map(str, shape.q))}, S={shape.k[2]}, mt={query_tile(shape.q[2])}"
                else:
                    why = f"library: {shape.macs} multiply-adds, above the rule"
            elif shape is not None:
                why = "library: policy library"
            plan.paths[f"attention {len(plan.paths)}"] = why
        return plan

    def emit(self, bb: relax.BlockBuilder, step: list[KilnOp], env: dict) -> bool:
        func = self.sites.get(step[0]) if len(step) == 1 else None
        if func is None:
            return False
        op = step[0]
        shape = list(dtypes.shape_of(op.results[0].type))
        gv = bb.add_func(func.without_attr("global_symbol"), "kiln_attention_" + "x".join(map(str, shape)))
        env[op.results[0]] = bb.emit(relax.call_tir(gv, [env[v] for v in op.operands],
                                                    relax.TensorType(shape, "float32")))
        return True


def _shape(op: AttentionOp, sizes: dict[int, int]) -> tuple[AttentionShape | None, str]:
    if not alone(op, sizes):
        return None, "library: fused with other ops"
    q, k, v = (tuple(dtypes.shape_of(x.type)) for x in op.operands[:3])
    if any(dtypes.dtype_of(x.type) != torch.float32 for x in [*op.operands[:3], op.results[0]]):
        return None, "library: not float32"
    if len(q) != 4:
        return None, f"library: rank {len(q)} (the kernel takes [B, H, L, E])"
    if any(kd not in (1, qd) or vd not in (1, qd) for qd, kd, vd in zip(q[:2], k[:2], v[:2], strict=True)):
        return None, "library: q broadcasts over k or v"
    mask, mask_dtype = None, "bool"
    if len(op.operands) > 3:
        mask = tuple(dtypes.shape_of(op.operands[3].type))
        if not 2 <= len(mask) <= 4:
            return None, f"library: rank-{len(mask)} mask"
        mask_dtype = str(dtypes.dtype_of(op.operands[3].type)).removeprefix("torch.")
        if mask_dtype not in ("bool", "float32"):
            return None, f"library: {mask_dtype} mask"
    scale = op.opt("scale")
    scale = float(scale) if scale is not None else q[-1] ** -0.5
    return AttentionShape(q, k, v, mask, mask_dtype, bool(op.opt("causal")), scale), ""
