"""Attention template: scaled dot-product attention as one flash-attention kernel.

Prefill (query length > 1): each program owns BLOCK_M queries of one batch entry, keeps
the running row max, row sum and output accumulator in registers, and walks the keys in
BLOCK_N blocks (online softmax in base 2, scale folded into log2(e)); a causal kernel
stops at its last visible key block. A boolean mask (True keeps) or an additive float mask
is read per block, broadcast to [*batch, L, S]. Nothing of size L x S is ever stored.

Decode (query length 1): a single query row leaves a prefill grid nearly empty, so the
keys are split NUM_SPLITS ways (split-KV, as in FlashDecoding); each split writes its
partial (max, sum, accumulator), and a merge kernel combines them with the associative
rule out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i. That group is two kernels.

Prologue ops (on q, k, v or the mask) are evaluated at the block's index when loaded;
epilogue elementwise ops are applied to the output tile. Refused (the group is split):
outputs of another shape than the attention result, or the result read at another index.
A query row with every key masked gives zeros, as torch does.
"""

from __future__ import annotations

import math

import torch
from xdsl.ir import Operation

from backends.triton.emitter import (
    ZERO,
    Expr,
    Idx,
    KernelEmitter,
    dtype_of,
    shape_of,
    union,
)
from backends.triton.groups import ATTENTION_OPS, Group
from backends.triton.kernel_spec import KernelSpec, Scratch, TemplateContext, cdiv
from backends.triton.knobs import AttentionKnobs, next_pow2
from backends.triton.matmul import axis, batch_dims, operand_batch, store_outputs, zero_outside

LOG2E = 1.4426950408889634
NEG_INF = 'float("-inf")'


class _Attention:
    def __init__(self, op: Operation, group: Group, ctx: TemplateContext) -> None:
        self.op, self.group, self.ctx = op, group, ctx
        q, k, v = (shape_of(o) for o in op.operands[:3])
        self.q_shape, self.k_shape, self.v_shape = q, k, v
        self.out_shape = shape_of(op.results[0])
        self.batch = self.out_shape[:-2]
        self.L, self.E, self.S, self.Ev = q[-2], q[-1], k[-2], v[-1]
        self.BD, self.BDV = next_pow2(self.E), next_pow2(self.Ev)
        scale = op.opt("scale")
        self.qk_scale = (scale if scale is not None else 1.0 / math.sqrt(self.E)) * LOG2E
        self.causal = bool(op.opt("causal"))
        self.mask = op.operands[3] if len(op.operands) == 4 else None
        self.knobs: AttentionKnobs = ctx.knobs("attention", {"L": self.L, "S": self.S})  # type: ignore[assignment]

    def operand(
        self, em: KernelEmitter, i: int, dims: tuple[Expr, ...], bdims: tuple[Expr, ...]
    ) -> Expr:
        o = self.op.operands[i]
        shape = shape_of(o)
        return zero_outside(
            em, em.value(o, Idx(shape, dims=operand_batch(bdims, self.batch, shape[:-2]) + dims))
        )

    def scores(
        self, em: KernelEmitter, s: str, rows: Expr, keys: Expr, bdims: tuple[Expr, ...], limit: str
    ) -> Expr:
        """Scaled scores (log2 domain) with the causal rule, the mask and `limit` applied."""
        valid = [f"({keys} < {limit})"]
        if self.causal:
            valid.append(f"({keys} <= {rows})")
        text = s
        if self.mask is not None:
            full = (*self.batch, self.L, self.S)
            mv = em.value(
                self.mask, em.broadcast(Idx(full, dims=bdims + (rows, keys)), shape_of(self.mask))
            )
            if dtype_of(self.mask).is_floating_point:
                text = f"{s} + {mv} * {LOG2E!r}"
            else:
                valid.append(f"({mv} != 0)")
        return em.var(f"tl.where({' & '.join(valid)}, {text}, {NEG_INF})")

    def finish(self, em: KernelEmitter, tile: Idx, result: Expr, masks: frozenset[str]) -> None:
        store_outputs(em, self.group, self.op, tile, result, masks)

    # ---- prefill ----------------------------------------------------------------------
    def prefill(self) -> list[KernelSpec]:
        em = self.ctx.emitter(f"{self.group.name}_attention", self.group)
        L, S, E, Ev = self.L, self.S, self.E, self.Ev
        em.line("pid_m = tl.program_id(0)")
        bdims = batch_dims(em, self.batch, "tl.program_id(1)")
        em.line("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        em.line(f"rd = tl.arange(0, {self.BD})")
        em.line(f"rdv = tl.arange(0, {self.BDV})")
        rows = axis("rm", L, True)
        q = self.operand(em, 0, (rows, axis("rd", E, False)), bdims)
        em.line(f"m_i = tl.full([BLOCK_M], {NEG_INF}, tl.float32)")
        em.line("l_i = tl.zeros([BLOCK_M], dtype=tl.float32)")
        em.line(f"acc = tl.zeros([BLOCK_M, {self.BDV}], dtype=tl.float32)")
        # Causal: keys past this block's last query are all masked, so the loop stops there.
        em.line(f"hi = tl.minimum({S}, (pid_m + 1) * BLOCK_M)" if self.causal else f"hi = {S}")
        prec = self.knobs.input_precision
        with em.block("for n0 in range(0, hi, BLOCK_N):"):
            em.line("rn = n0 + tl.arange(0, BLOCK_N)")
            kt = self.operand(em, 1, (axis("rn", S, False), axis("rd", E, True)), bdims)
            s = em.var(f'tl.dot({q}, {kt}, input_precision="{prec}") * {self.qk_scale!r}')
            s = self.scores(em, s.text, rows, axis("rn", S, False), bdims, str(S))
            new = em.var(f"tl.maximum(m_i, tl.max({s}, 1))")
            safe = em.var(f"tl.where({new} == {NEG_INF}, 0.0, {new})")
            alpha = em.var(f"tl.exp2(m_i - {safe})")
            p = em.var(f"tl.exp2({s} - {safe}[:, None])")
            em.line(f"l_i = l_i * {alpha} + tl.sum({p}, 1)")
            v = self.operand(em, 2, (axis("rn", S, True), axis("rdv", Ev, False)), bdims)
            em.line(f'acc = acc * {alpha}[:, None] + tl.dot({p}, {v}, input_precision="{prec}")')
            em.line(f"m_i = {new}")
        cols = axis("rdv", Ev, False)
        result = em.var("acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]", union(rows, cols))
        base = f"pid_b * {L * Ev} + " if self.batch else ""
        flat = em.var(f"{base}rm[:, None] * {Ev} + rdv[None, :]", union(rows, cols), prefix="f")
        self.finish(
            em,
            em.declare(Idx(self.out_shape, dims=bdims + (rows, cols), flat=flat)),
            result,
            union(rows, cols),
        )
        grid = (cdiv(L, self.knobs.BLOCK_M), math.prod(self.batch))
        uses = ("BLOCK_M", "BLOCK_N")
        source = em.source(list(uses))
        return [
            KernelSpec(
                em.name, "attention", self.group.name, source, em.args, self.knobs, grid, uses=uses
            )
        ]

    # ---- decode -----------------------------------------------------------------------
    def decode(self) -> list[KernelSpec]:
        name, S, E, Ev = self.group.name, self.S, self.E, self.Ev
        nb, splits = math.prod(self.batch), self.knobs.NUM_SPLITS
        f32 = torch.float32
        scratch = [
            Scratch(f"{name}_mpart", (nb, splits), f32),
            Scratch(f"{name}_lpart", (nb, splits), f32),
            Scratch(f"{name}_accpart", (nb, splits, Ev), f32),
        ]
        em = self.ctx.emitter(f"{name}_attention_split", self.group)
        em.line("pid_s = tl.program_id(0)")
        bdims = batch_dims(em, self.batch, "tl.program_id(1)")
        em.line(
            f"chunk = ((({S} + NUM_SPLITS - 1) // NUM_SPLITS + BLOCK_N - 1) // BLOCK_N) * BLOCK_N"
        )
        em.line("lo = pid_s * chunk")
        em.line(f"hi = tl.minimum(lo + chunk, {S})")
        em.line(f"rd = tl.arange(0, {self.BD})")
        em.line(f"rdv = tl.arange(0, {self.BDV})")
        q = self.operand(em, 0, (ZERO, Expr("rd", frozenset({f"(rd < {E})"}))), bdims)
        em.line(f"m_i = tl.full([], {NEG_INF}, tl.float32)")
        em.line("l_i = tl.zeros([], dtype=tl.float32)")
        em.line(f"acc = tl.zeros([{self.BDV}], dtype=tl.float32)")
        with em.block("for n0 in range(lo, hi, BLOCK_N):"):
            em.line("rn = n0 + tl.arange(0, BLOCK_N)")
            k = self.operand(em, 1, (axis("rn", S, True), axis("rd", E, False)), bdims)
            s = em.var(f"tl.sum({k} * {q}[None, :], 1) * {self.qk_scale!r}")
            s = self.scores(em, s.text, ZERO, Expr("rn", frozenset({f"(rn < {S})"})), bdims, "hi")
            new = em.var(f"tl.maximum(m_i, tl.max({s}, 0))")
            safe = em.var(f"tl.where({new} == {NEG_INF}, 0.0, {new})")
            alpha = em.var(f"tl.exp2(m_i - {safe})")
            p = em.var(f"tl.exp2({s} - {safe})")
            em.line(f"l_i = l_i * {alpha} + tl.sum({p}, 0)")
            v = self.operand(em, 2, (axis("rn", S, True), axis("rdv", Ev, False)), bdims)
            em.line(f"acc = acc * {alpha} + tl.sum({p}[:, None] * {v}, 0)")
            em.line(f"m_i = {new}")
        part = "pid_b * NUM_SPLITS + pid_s" if self.batch else "pid_s"
        for s_ in scratch:
            em.scratch_arg(s_.name, s_.dtype)
        em.line(f"tl.store({name}_mpart + {part}, m_i)")
        em.line(f"tl.store({name}_lpart + {part}, l_i)")
        em.line(f"tl.store({name}_accpart + ({part}) * {Ev} + rdv, acc, mask=rdv < {Ev})")
        uses = ("BLOCK_N", "NUM_SPLITS")
        split_spec = KernelSpec(
            em.name,
            "attention",
            name,
            em.source(list(uses)),
            em.args,
            self.knobs,
            (splits, nb),
            scratch,
            uses=uses,
        )
        return [split_spec, self.merge(scratch)]

    def merge(self, scratch: list[Scratch]) -> KernelSpec:
        name, Ev = self.group.name, self.Ev
        em = self.ctx.emitter(f"{name}_attention_merge", self.group)
        for s_ in scratch:
            em.scratch_arg(s_.name, s_.dtype)
        bdims = batch_dims(em, self.batch, "tl.program_id(0)")
        base = "pid_b * NUM_SPLITS + " if self.batch else ""
        em.line("rs = tl.arange(0, NUM_SPLITS)")
        em.line(f"rdv = tl.arange(0, {self.BDV})")
        em.line(f"m = tl.load({name}_mpart + {base}rs)")
        em.line(f"l = tl.load({name}_lpart + {base}rs)")
        em.line(
            f"acc = tl.load({name}_accpart + ({base}rs[:, None]) * {Ev} + rdv[None, :], "
            f"mask=rdv[None, :] < {Ev}, other=0.0)"
        )
        em.line("big = tl.max(m, 0)")
        em.line(f"w = tl.exp2(m - tl.where(big == {NEG_INF}, 0.0, big))")
        cols = Expr("rdv", frozenset({f"(rdv < {Ev})"}))
        em.line("total = tl.sum(w * l, 0)")
        result = em.var(
            "tl.sum(w[:, None] * acc, 0) / tl.where(total == 0.0, 1.0, total)", cols.masks
        )
        flat = em.var(f"pid_b * {Ev} + rdv", cols.masks, prefix="f") if self.batch else cols
        self.finish(
            em,
            em.declare(Idx(self.out_shape, dims=bdims + (ZERO, cols), flat=flat)),
            result,
            cols.masks,
        )
        uses = ("NUM_SPLITS",)
        return KernelSpec(
            em.name,
            "attention-merge",
            name,
            em.source(list(uses)),
            em.args,
            self.knobs,
            (math.prod(self.batch),),
            uses=uses,
        )


def emit_attention(group: Group, ctx: TemplateContext) -> list[KernelSpec]:
    (op,) = [o for o in group.ops if o.name in ATTENTION_OPS]
    attention = _Attention(op, group, ctx)
    return attention.decode() if attention.L == 1 else attention.prefill()
