"""`kiln.dequantize` as Triton code: packed bytes -> raw codes -> float32 values, in registers.

A packed dequantize (`ir/ops/quant.py`) holds a weight as one LSB-first bitstream of raw
codes (`ir/quant/packing.py`) over its row view (`to_rows(w, axis)`: rows are the other
dims, k runs along `axis`), plus a (rows, groups) grid of scales. Nothing here unpacks
ahead of time: `dequant_value` computes the weight at any index from the bytes, so the
matmul template decodes each BLOCK_K x BLOCK_N weight tile inside its K loop and the fp32
weight never exists in memory (`matmul.py`); alone, the same rule makes a pointwise
dequantize kernel.

The arithmetic is the emulation's, to the bit (`QuantFormat.dequantize`): decode(code) in
float32 times the scale in float32, so a kernel's weights equal the interpreter's and only
the order of the fp32 accumulation differs.

- codes: 8-bit codes are one byte each; 1/2/4-bit codes sit several to a byte, code i at
  bit (i % per) * bits of byte i // per (int4: `(byte >> ((i & 1) * 4)) & 15`); other widths
  (6, 12 bits) straddle bytes and read the 2 bytes around bit i * bits.
- elements: integers and fixed point sign-extend (`(c ^ 2^(b-1)) - 2^(b-1)`) and scale by
  2^-frac; minifloats build the float32 bit pattern of a normal number with shifts and a
  bitcast, multiply subnormals by 2^(emin - mbits), and restore inf / NaN codes.
- scales: f32 / f16 per tensor, per row (channel) or per group of `group` along k; E8M0
  bytes e become 2^(e - 127) through the same bitcast (`e << 23`; 2^-127 is a subnormal,
  given as a constant). With `KBlock` (the matmul's K loop), a group that BLOCK_K divides
  reads one scale per column per K block (`k0 // group`), else one per element row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from xdsl.ir import Operation, SSAValue

from backends.triton.emitter import (
    ZERO,
    Expr,
    Idx,
    KernelEmitter,
    TemplateMismatch,
    literal,
    shape_of,
    union,
)
from ir.core import normalize_dim
from ir.quant import get_format, packed_nbytes
from ir.quant.elements import FloatElement, IntElement
from ir.quant.fixed import FixedPoint
from ir.quant.formats import PER_ROW, PER_TENSOR, QuantFormat

MAX_BITS = 16  # codes up to 16 bits: every minifloat, int and weight fixed-point format
_F32 = torch.float32


@dataclass(frozen=True)
class KBlock:
    """The K loop around a matmul tile: `start` is the block's first k, `size` its BLOCK_K."""

    start: str
    size: int


def unsupported_reason(op: Operation) -> str | None:
    """Why a Triton kernel cannot decode this dequantize (it then runs through its
    reference implementation), or None."""
    fmt = get_format(op.opt("format"))
    e = fmt.element
    if fmt.bits > MAX_BITS:
        return f"{fmt.name}: {fmt.bits}-bit codes"
    if isinstance(e, FloatElement) and e.ebits > 8:
        return f"{fmt.name}: exponent wider than float32's"
    if not isinstance(e, FloatElement | IntElement | FixedPoint):
        return f"{fmt.name}: no Triton decoder for {type(e).__name__}"
    return None


def weight_name(op: Operation) -> str:
    """The quantized parameter a dequantize reads (its codes are `<weight>.qcodes`)."""
    owner = op.operands[0].owner
    name = owner.opt("name") if isinstance(owner, Operation) and owner.name == "kiln.param" else None
    return str(name).removesuffix(".qcodes") if name else f"dequantize of {op.operands[0].type}"


def dequant_value(em: KernelEmitter, op: Operation, idx: Idx, k_block: KBlock | None = None) -> Expr:
    """The float32 value of `op`'s result at `idx` (see the module docstring)."""
    reason = unsupported_reason(op)
    if reason is not None:
        raise TemplateMismatch(f"kiln.dequantize: {reason}")
    fmt = get_format(op.opt("format"))
    packed = op.opt("shape") is not None
    shape = tuple(op.opt("shape")) if packed else shape_of(op.operands[0])
    axis = normalize_dim(op.opt("axis"), len(shape))
    dims = em.dims_of(idx)
    rows_shape = tuple(s for i, s in enumerate(shape) if i != axis)
    rows_dims = tuple(d for i, d in enumerate(dims) if i != axis)
    k = dims[axis]
    if packed:  # code i = row * K + k of the row view
        i = em.flat_of(Idx(rows_shape + (shape[axis],), dims=rows_dims + (k,)))
        code = _packed_code(em, op.operands[0], i, fmt.bits, packed_nbytes(math.prod(shape), fmt.bits))
    else:  # codes in the result's shape (i8 up to 8 bits, else i32)
        code = _load(em, op.operands[0], em.flat_of(idx))
        if fmt.bits != 8:
            code = em.var(f"{code}.to(tl.int32) & {(1 << fmt.bits) - 1}", code.masks, prefix="c")
    value = _element(em, fmt, code)
    if fmt.scale != "none":
        row = em.flat_of(Idx(rows_shape, dims=rows_dims)) if rows_shape else ZERO
        scale = _scale(em, op.operands[1], fmt, row, k, shape[axis], k_block)
        value = em.var(f"{value} * {scale}", union(value, scale), prefix="w")
    return Expr(value.text, union(*dims), zero_filled=True)  # code 0 is +0 in every format


def dequant_rule(em: KernelEmitter, op: Operation, idx: Idx) -> Expr:
    """The `lowering.RULES` entry: a dequantize evaluated where a kernel reads it."""
    return dequant_value(em, op, idx)


# ---- codes ----------------------------------------------------------------------------
def _load(em: KernelEmitter, v: SSAValue, addr: Expr) -> Expr:
    """A masked load of raw bytes or scales (no conversion: the caller interprets them)."""
    ptr = em.input_arg(v)
    masks = addr.masks | frozenset(em.predicates)
    where = ptr if addr.text == "0" else f"{ptr} + {addr}"
    mask = f", mask={' & '.join(sorted(masks))}, other=0" if masks else ""
    return em.var(f"tl.load({where}{mask})", addr.masks, prefix="x")


def _packed_code(em: KernelEmitter, codes: SSAValue, i: Expr, bits: int, nbytes: int) -> Expr:
    """Code i of the LSB-first bitstream: int32 in [0, 2^bits), or for 8-bit codes the
    loaded int8 byte itself (`_element` reads it signed or masks it)."""
    mask = (1 << bits) - 1
    if bits == 8:
        return _load(em, codes, i)
    if 8 % bits == 0:  # several whole codes per byte
        per = 8 // bits
        at = em.var(f"{i} >> {per.bit_length() - 1}", i.masks, prefix="f")
        byte = _load(em, codes, at)
        return em.var(f"({byte}.to(tl.int32) >> (({i} & {per - 1}) * {bits})) & {mask}", i.masks, prefix="c")
    if bits % 8 == 0:  # 16-bit codes: little-endian bytes
        nb = bits // 8
        base = em.var(f"{i} * {nb}", i.masks, prefix="f")
        parts = [_byte(em, codes, base, j) for j in range(nb)]
        return em.var(" | ".join(parts), i.masks, prefix="c")
    # Codes straddle bytes (6, 12 bits): read the bytes that hold bits [i*b, i*b + b).
    off = em.var(f"{i} * {bits}", i.masks, prefix="f")
    base = em.var(f"{off} >> 3", i.masks, prefix="f")
    span = -(-(8 - math.gcd(bits, 8) + bits) // 8)
    parts = [_byte(em, codes, base, j, last=nbytes - 1) for j in range(span)]
    return em.var(f"(({' | '.join(parts)}) >> ({off} & 7)) & {mask}", i.masks, prefix="c")


def _byte(em: KernelEmitter, codes: SSAValue, base: Expr, j: int, last: int | None = None) -> str:
    """`(byte[base + j] & 255) << 8j` as text; past the last byte (a code that does not
    reach it) the index is clamped, and the bits read there are shifted out or masked."""
    if j == 0:
        at = base
    elif last is None:
        at = Expr(f"({base} + {j})", base.masks)
    else:
        at = Expr(f"tl.minimum({base} + {j}, {last})", base.masks)
    byte = _load(em, codes, at)
    text = f"({byte}.to(tl.int32) & 255)"
    return text if j == 0 else f"({text} << {8 * j})"


# ---- elements -------------------------------------------------------------------------
def _element(em: KernelEmitter, fmt: QuantFormat, code: Expr) -> Expr:
    e = fmt.element
    if isinstance(e, IntElement | FixedPoint):
        signed = e.signed if isinstance(e, FixedPoint) else True
        frac = e.frac_bits if isinstance(e, FixedPoint) else e.frac
        if e.bits == 8 and signed:
            k = f"{code}.to(tl.float32)"  # the loaded int8 is the two's complement code
        elif e.bits == 8:
            k = f"({code}.to(tl.int32) & 255).to(tl.float32)"
        elif signed:
            half = 1 << (e.bits - 1)
            k = f"(({code} ^ {half}) - {half}).to(tl.float32)"
        else:
            k = f"{code}.to(tl.float32)"
        return em.var(k if frac == 0 else f"{k} * {literal(2.0 ** -frac, _F32)}", code.masks, prefix="v")
    assert isinstance(e, FloatElement)
    if e.bits == 8:
        code = em.var(f"{code}.to(tl.int32) & 255", code.masks, prefix="c")
    m, emask = e.mbits, (1 << e.ebits) - 1
    ef = em.var(f"({code} >> {m}) & {emask}", code.masks, prefix="c")
    man = em.var(f"{code} & {(1 << m) - 1}", code.masks, prefix="c")
    # A normal number's float32 pattern: exponent rebased to 127, mantissa at the top.
    normal = f"((({ef} + {127 - e.bias}) << 23) | ({man} << {23 - m})).to(tl.float32, bitcast=True)"
    sub = f"{man}.to(tl.float32) * {literal(2.0 ** (e.emin - m), _F32)}"
    mag = em.var(f"tl.where({ef} == 0, {sub}, {normal})", code.masks, prefix="v")
    if e.has_inf:
        mag = em.var(f'tl.where({ef} == {emask}, tl.where({man} == 0, float("inf"), float("nan")), {mag})',
                     code.masks, prefix="v")
    elif e.nan_code is not None:
        mag = em.var(f'tl.where(({code} & {(1 << (e.bits - 1)) - 1}) == {e.nan_code}, float("nan"), {mag})',
                     code.masks, prefix="v")
    return em.var(f"tl.where(({code} >> {e.bits - 1}) != 0, -{mag}, {mag})", code.masks, prefix="v")


# ---- scales ---------------------------------------------------------------------------
def _scale(em: KernelEmitter, scales: SSAValue, fmt: QuantFormat, row: Expr, k: Expr,
           size_k: int, k_block: KBlock | None) -> Expr:
    if fmt.group == PER_TENSOR:
        addr = ZERO
    elif fmt.group == PER_ROW:
        addr = row
    else:
        g = fmt.group
        if k_block is not None and g % k_block.size == 0:
            group = Expr(f"({k_block.start} // {g})")  # one scale per column per K block
        else:
            group = Expr(f"({k} // {g})", k.masks)
        groups = fmt.ngroups(size_k)
        text = group.text if row.text == "0" else f"{row} * {groups} + {group}"
        addr = em.var(text, row.masks | group.masks, prefix="f")
    raw = _load(em, scales, addr)
    if fmt.scale == "e8m0":  # 2^(e - 127), exact; e = 0 is the subnormal 2^-127
        e8 = em.var(f"{raw}.to(tl.int32) & 255", raw.masks, prefix="c")
        pow2 = f"({e8} << 23).to(tl.float32, bitcast=True)"
        return em.var(f"tl.where({e8} == 0, {literal(2.0 ** -127, _F32)}, {pow2})", raw.masks, prefix="s")
    if fmt.scale == "f16":
        return em.var(f"{raw}.to(tl.float32)", raw.masks, prefix="s")
    return raw

