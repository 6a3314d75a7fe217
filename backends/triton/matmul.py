"""Matmul template: one matmul or linear (batched, broadcast batch dims) with fused prologue
and epilogue elementwise ops.

Each program computes a BLOCK_M x BLOCK_N tile of the result, walking K in BLOCK_K steps
with `tl.dot` into an fp32 accumulator; tiles are launched in groups of GROUP_M rows so
neighbouring programs share B tiles in L2 (Triton's matmul tutorial ordering). Operands
are evaluated at the tile's index inside the K loop, so an elementwise prologue (or a
permute of an input) costs no extra pass; computed operands are zeroed outside the
masks before the dot. The bias of a linear and every epilogue op are applied to the
accumulator in registers, and the group's outputs are stored from the tile.

A packed `kiln.dequantize` feeding the weight operand (`dequant_fusion.py`) is decoded
tile by tile in the K loop from its bytes and scales (`dequant.py`); BLOCK_K must divide
or be a multiple of its group size (`knobs.check_group_block_k`).

Refused (the group is split): outputs of a shape other than the contraction's result,
and an epilogue that reads the result at another index (a permute after the matmul).
"""

from __future__ import annotations

import math

from xdsl.ir import Operation

from backends.triton.dequant import KBlock, dequant_value, weight_name
from backends.triton.emitter import (
    ZERO,
    Expr,
    Idx,
    KernelEmitter,
    TemplateMismatch,
    dtype_of,
    shape_of,
    union,
)
from backends.triton.groups import MATMUL_OPS, Group
from backends.triton.kernel_spec import BIG, KernelSpec, TemplateContext, cdiv, program_id
from backends.triton.knobs import check_group_block_k
from ir.ops.elementwise import broadcast_shapes
from ir.quant import get_format


def axis(name: str, size: int, row: bool) -> Expr:
    """`name` as a column ([:, None]) or row ([None, :]) of a 2-D tile, masked by `size`."""
    text = f"{name}[:, None]" if row else f"{name}[None, :]"
    return Expr(text, frozenset({f"({text} < {size})"}))


def batch_dims(em: KernelEmitter, batch: tuple[int, ...], pid: str) -> tuple[Expr, ...]:
    if not batch:
        return ()
    em.line(f"pid_b = {pid}")
    return em.dims_of(Idx(batch, flat=Expr("pid_b")))


def operand_batch(
    dims: tuple[Expr, ...], batch: tuple[int, ...], operand_batch: tuple[int, ...]
) -> tuple[Expr, ...]:
    """The batch dims of an operand that broadcasts to `batch`."""
    own = dims[len(batch) - len(operand_batch) :] if operand_batch else ()
    return tuple(ZERO if s == 1 else d for d, s in zip(own, operand_batch))


def tile_order(em: KernelEmitter, m: int, n: int, big: bool) -> None:
    """pid -> (pid_m, pid_n), GROUP_M tile rows at a time (L2 reuse)."""
    em.line(f"pid = {program_id(0, big)}")
    em.line(f"num_pid_m = ({m} + BLOCK_M - 1) // BLOCK_M")
    em.line(f"num_pid_n = ({n} + BLOCK_N - 1) // BLOCK_N")
    em.line("pid_in_group = pid % (GROUP_M * num_pid_n)")
    em.line("first_m = (pid // (GROUP_M * num_pid_n)) * GROUP_M")
    em.line("group_m = tl.minimum(num_pid_m - first_m, GROUP_M)")
    em.line("pid_m = first_m + pid_in_group % group_m")
    em.line("pid_n = pid_in_group // group_m")
    em.line("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    em.line("rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")


def zero_outside(em: KernelEmitter, x: Expr) -> Expr:
    """Masked lanes of a computed operand may hold garbage (exp(0) = 1); a dot must see 0."""
    if x.zero_filled or not x.masks:
        return x
    return em.var(f"tl.where({x.mask_text()}, {x}, 0.0)", x.masks)


def emit_matmul(group: Group, ctx: TemplateContext) -> list[KernelSpec]:
    (op,) = [o for o in group.ops if o.name in MATMUL_OPS]
    out_shape = shape_of(op.results[0])
    linear = op.name == "kiln.linear"
    a_shape, b_shape = shape_of(op.operands[0]), shape_of(op.operands[1])
    if linear:
        lead, k, n = a_shape[:-1], a_shape[-1], b_shape[0]
        batch: tuple[int, ...] = ()
        m = math.prod(lead)
    else:
        batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
        m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
    knobs = ctx.knobs("matmul", {"M": m, "N": n, "K": k})
    deq = group.defining().get(op.operands[1])
    if deq is not None and deq.name != "kiln.dequantize":
        deq = None
    if deq is not None:
        check_group_block_k(knobs, get_format(deq.opt("format")).group, weight_name(deq))
    em = ctx.emitter(f"{group.name}_matmul", group)
    big = math.prod(out_shape) > BIG or math.prod(a_shape) > BIG or math.prod(b_shape) > BIG
    tile_order(em, m, n, big)
    bdims = batch_dims(em, batch, program_id(1, big))
    rm, rn = axis("rm", m, True), axis("rn", n, False)
    # The tile's index in the result, with the flat offset given so stores need no div/mod.
    if linear:
        lead_dims = tuple(
            d if d.is_literal else Expr(f"{d}[:, None]", rm.masks)
            for d in em.dims_of(Idx(lead, flat=Expr("rm")))
        )
        out_dims = lead_dims + (rn,)
    else:
        out_dims = bdims + (rm, rn)
    base = f"pid_b * {m * n} + " if batch else ""
    tile = em.declare(
        Idx(
            out_shape,
            dims=out_dims,
            flat=em.var(f"{base}rm[:, None] * {n} + rn[None, :]", union(rm, rn), prefix="f"),
        )
    )
    em.line("acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)")
    if deq is not None:
        em.line(f"# {weight_name(deq)}: {deq.opt('format')} codes decoded in the K loop")
    with em.block(f"for k0 in range(0, {k}, BLOCK_K):"):
        em.line("rk = k0 + tl.arange(0, BLOCK_K)")
        kc, kr = axis("rk", k, False), axis("rk", k, True)
        if linear:
            a_idx = Idx(
                a_shape,
                dims=lead_dims + (kc,),
                flat=Expr(f"rm[:, None] * {k} + rk[None, :]", union(rm, kc)),
            )
            b_idx = Idx(b_shape, dims=(rn, kr))  # weight [N, K] read as its transpose
        else:
            a_idx = Idx(a_shape, dims=operand_batch(bdims, batch, a_shape[:-2]) + (rm, kc))
            b_idx = Idx(b_shape, dims=operand_batch(bdims, batch, b_shape[:-2]) + (kr, rn))
        a = zero_outside(em, em.value(op.operands[0], a_idx))
        if deq is not None:
            b = dequant_value(em, deq, b_idx, KBlock("k0", knobs.BLOCK_K))
        else:
            b = zero_outside(em, em.value(op.operands[1], b_idx))
        # An operand that broadcasts along M, N or K (an expanded row, a weight with
        # N = 1, a prologue of a smaller tensor) evaluates to a thinner tile; tl.dot needs
        # [BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N] or it rejects the accumulator.
        a = em.var(f"tl.broadcast_to({a}, (BLOCK_M, BLOCK_K))", a.masks)
        b = em.var(f"tl.broadcast_to({b}, (BLOCK_K, BLOCK_N))", b.masks)
        em.line(f'acc = tl.dot({a}, {b}, acc, input_precision="{knobs.input_precision}")')
    result = Expr("acc", union(rm, rn))
    if linear and len(op.operands) == 3:
        bias = em.value(op.operands[2], Idx((n,), dims=(rn,)))
        result = em.var(f"acc + {bias}", result.masks)
    store_outputs(em, group, op, tile, result, union(rm, rn))
    grid = (
        (cdiv(m, knobs.BLOCK_M) * cdiv(n, knobs.BLOCK_N), math.prod(batch))
        if batch
        else (cdiv(m, knobs.BLOCK_M) * cdiv(n, knobs.BLOCK_N),)
    )
    source = em.source(list(knobs.constexprs()))
    return [KernelSpec(em.name, "matmul", group.name, source, em.args, knobs, grid)]


def store_outputs(
    em: KernelEmitter, group: Group, op: Operation, tile: Idx, result: Expr, masks: frozenset[str]
) -> None:
    """Register the anchor's tile value and store every group output from the tile.

    An output downstream of the anchor is stored at the tile's index pushed through the
    data movement between them (`KernelEmitter.store_index`); an output of the anchor's
    shape that does not depend on it (a prologue value) is computed at the tile's index.
    """
    anchor = op.results[0]

    def at(idx: Idx) -> Expr:
        same = (idx.flat is not None and idx.flat.text == tile.flat.text) or (  # type: ignore[union-attr]
            idx.shape == tile.shape
            and tuple(d.text for d in em.dims_of(idx)) == tuple(d.text for d in tile.dims or ())
        )
        if not same:
            raise TemplateMismatch(
                f"{op.name} result is read outside its tile (data movement in the epilogue)"
            )
        return result

    em.anchors[anchor] = at
    for o in group.outputs:
        if em.depends(o, anchor):
            idx = em.store_index(anchor, tile, o)
        elif shape_of(o) == tile.shape:
            idx = tile
        else:
            raise TemplateMismatch(
                f"output of shape {shape_of(o)} is neither downstream of {op.name} nor its shape"
            )
        em.store(em.output_arg(o), em.flat_of(idx), em.value(o, idx), dtype_of(o), masks)
