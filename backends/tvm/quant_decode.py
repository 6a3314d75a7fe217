"""Reading packed quantized weights inside a TIR kernel: bytes -> codes -> float32 values.

A packed `kiln.dequantize` (`ir/ops/quant.py`) holds a weight as one LSB-first bitstream
of raw codes (`ir/quant/packing.py`) plus a (rows, groups) grid of scales. Kernels here
never unpack it ahead of time: `decoded` returns a TE stage whose value at (row, k) is
computed from the bytes where it is read, so a schedule can place it next to its
consumer (a tile of rows decoded into L1 inside the matmul, `quant_matmul.py`).

The arithmetic is the emulation's, to the bit (`ir.quant.formats.QuantFormat.dequantize`):
decode(code) in float32 times the scale in float32. Integer and fixed-point elements are
a sign extension and a power-of-two multiply; minifloats (FP8, FP6, FP4) have their sign,
exponent and mantissa fields moved into a float32's, with subnormals, infinities and NaN
codes as the emulation decodes them (a 16-entry table gather instead measured 1.3-2x
slower for MXFP4); bf16 and fp16 are bit reinterpretations. E8M0 scales are
2^(byte - 127), exact in float32 (byte 0, 2^-127, is a subnormal, given as a constant).

Codes are read group by group: lcm(bits, 8) bits hold P whole codes (2 for int4, 4 for
6-bit formats, 1 for int8), so the stage is indexed (row, k // P, k % P) and a loop over
k // P reads consecutive bytes; that is what lets LLVM vectorize the unpacking (indexing
by k alone made every lane a gather: 3x slower for int4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import te, tirx

from ir.quant import get_format
from ir.quant.elements import FloatElement, IntElement
from ir.quant.fixed import FixedPoint
from ir.quant.formats import PER_TENSOR, QuantFormat
from ir.quant.packing import packed_nbytes

_SCALE_DTYPE = {"f32": "float32", "f16": "float16", "e8m0": "int8"}


@dataclass(frozen=True)
class PackedLayout:
    """A packed weight's row view as a kernel reads it: `rows` x `k` codes of `format`."""

    format: str
    rows: int
    k: int

    @property
    def fmt(self) -> QuantFormat:
        return get_format(self.format)

    @property
    def nbytes(self) -> int:
        return packed_nbytes(self.rows * self.k, self.fmt.bits)

    @property
    def per_word(self) -> int:
        """Whole codes in one lcm(bits, 8)-bit word."""
        bits = self.fmt.bits
        return math.lcm(bits, 8) // bits

    @property
    def word_bytes(self) -> int:
        return math.lcm(self.fmt.bits, 8) // 8

    @property
    def aligned(self) -> bool:
        """Every row starts on a word boundary, so codes can be read word by word."""
        return self.k % self.per_word == 0 and self.word_bytes <= 3

    @property
    def scale_shape(self) -> tuple[int, int] | None:
        fmt = self.fmt
        return None if fmt.scale == "none" else fmt.scale_shape(self.rows, self.k)

    @property
    def scale_dtype(self) -> str | None:
        return _SCALE_DTYPE.get(self.fmt.scale)


def unsupported_reason(fmt: QuantFormat) -> str | None:
    """Why TIR cannot decode `fmt` (then the reference path runs it), or None."""
    e = fmt.element
    if fmt.bits > 16:
        return f"{fmt.name}: {fmt.bits}-bit codes"
    if fmt.scale not in ("none", *_SCALE_DTYPE):
        return f"{fmt.name}: scale kind {fmt.scale!r}"
    if isinstance(e, (IntElement, FixedPoint)):
        return None
    if isinstance(e, FloatElement) and e.ebits <= 8 and e.mbits <= 23 and e.bias <= 127:
        return None
    return f"{fmt.name}: no TIR decoder for element {type(e).__name__}"


def _byte(codes: te.Tensor, index) -> tirx.PrimExpr:
    return codes[index].astype("int32") & 255


def _code_aligned(codes: te.Tensor, layout: PackedLayout, row, word, slot) -> tirx.PrimExpr:
    bits, nb = layout.fmt.bits, layout.word_bytes
    base = (row * (layout.k // layout.per_word) + word) * nb
    value = _byte(codes, base)
    for i in range(1, nb):
        value = value | (_byte(codes, base + i) << (8 * i))
    if layout.per_word == 1:
        return value
    return (value >> (slot * bits)) & ((1 << bits) - 1)


def _code_any(codes: te.Tensor, layout: PackedLayout, row, kk) -> tirx.PrimExpr:
    """The code at an arbitrary bit offset (rows not word-aligned): up to 3 bytes."""
    bits, last = layout.fmt.bits, layout.nbytes - 1
    row = tirx.const(row, "int64") if isinstance(row, int) else row.astype("int64")
    offset = (row * layout.k + kk) * bits
    byte = offset >> 3
    value = _byte(codes, byte)
    # A byte past the end is only read when the code does not reach it: clamp the index.
    for i in range(1, (7 + bits + 7) // 8):
        value = value | (_byte(codes, tirx.min(byte + i, last)) << (8 * i))
    return (value >> (offset & 7).astype("int32")) & ((1 << bits) - 1)


def _minifloat(code: tirx.PrimExpr, e: FloatElement) -> tirx.PrimExpr:
    """A minifloat's value by bit arithmetic: its fields moved into a float32's."""
    f32 = "float32"
    exp = (code >> e.mbits) & ((1 << e.ebits) - 1)
    man = code & ((1 << e.mbits) - 1)
    normal = tirx.reinterpret(
        f32, (((exp + (127 - e.bias)) << 23) | (man << (23 - e.mbits))).astype("uint32")
    )
    sub = man.astype(f32) * tirx.const(2.0 ** (e.emin - e.mbits), f32)
    value = tirx.Select(exp == 0, sub, normal)
    top = exp == (1 << e.ebits) - 1
    if e.has_inf:
        value = tirx.Select(
            top, tirx.Select(man == 0, tirx.const(math.inf, f32), tirx.const(math.nan, f32)), value
        )
    elif e.nan_code is not None:
        value = tirx.Select(
            (code & ((1 << (e.bits - 1)) - 1)) == e.nan_code, tirx.const(math.nan, f32), value
        )
    return tirx.Select(((code >> (e.bits - 1)) & 1) == 1, -value, value)


def _value(code: tirx.PrimExpr, fmt: QuantFormat) -> tirx.PrimExpr:
    e = fmt.element
    if isinstance(e, FloatElement):
        if (e.ebits, e.mbits) == (8, 7):  # bf16: the top half of a float32
            return tirx.reinterpret("float32", code.astype("uint32") << 16)
        if (e.ebits, e.mbits) == (5, 10):  # fp16: the CPU converts it
            return tirx.reinterpret("float16", code.astype("uint16")).astype("float32")
        return _minifloat(code, e)
    signed = e.signed if isinstance(e, FixedPoint) else True
    frac = e.frac_bits if isinstance(e, FixedPoint) else e.frac
    k = ((code << (32 - e.bits)) >> (32 - e.bits)) if signed else code
    value = k.astype("float32")
    return value if frac == 0 else value * tirx.const(2.0**-frac, "float32")


def _scale_value(s: tirx.PrimExpr, fmt: QuantFormat) -> tirx.PrimExpr:
    """A stored scale as float32: f32 as is, f16 widened, E8M0 as 2^(byte - 127)."""
    if fmt.scale == "f32":
        return s
    if fmt.scale == "f16":
        return s.astype("float32")
    biased = s.astype("int32") & 255
    power = tirx.reinterpret("float32", biased.astype("uint32") << 23)
    return tirx.Select(biased == 0, tirx.const(2.0**-127, "float32"), power)


def _scales(scales: te.Tensor | None, fmt: QuantFormat):
    """read(row, k) -> the float32 scale of that weight, or None for scale-free formats.

    Grouped and per-row scales go through a stage `S` of float32 values, one per
    (row, group), so a schedule converts each once per tile and reads them from a buffer
    laid out for its loops (a per-element f16 gather across rows was 1.5x slower).
    """
    if scales is None:
        return None
    if fmt.group == PER_TENSOR:
        return lambda row, kk: _scale_value(scales[0, 0], fmt)
    S = te.compute(scales.shape, lambda r, g: _scale_value(scales[r, g], fmt), name="S")
    if fmt.group > 0:
        return lambda row, kk: S[row, kk // fmt.group]
    return lambda row, kk: S[row, 0]


def decoded(
    codes: te.Tensor, scales: te.Tensor | None, layout: PackedLayout
) -> tuple[te.Tensor, object]:
    """(stage W, read) where `read(row, k)` is the dequantized weight, as the emulation gives.

    W is indexed (row, k // P, k % P) for word-aligned rows and (row, k, 0) otherwise;
    a schedule `compute_at`s it (and the scale stage `S`, when there is one), or inlines it.
    """
    fmt, p = layout.fmt, layout.per_word
    scale = _scales(scales, fmt)

    def scaled(code, row, kk):
        value = _value(code, fmt)
        return value if scale is None else value * scale(row, kk)

    if layout.aligned:
        shape = (layout.rows, layout.k // p, p)
        W = te.compute(
            shape,
            lambda r, w, t: scaled(_code_aligned(codes, layout, r, w, t), r, w * p + t),
            name="W",
        )
        return W, lambda r, kk: W[r, kk // p, kk % p]
    W = te.compute(
        (layout.rows, layout.k, 1),
        lambda r, kk, _: scaled(_code_any(codes, layout, r, kk), r, kk),
        name="W",
    )
    return W, lambda r, kk: W[r, kk, 0]


def placeholders(layout: PackedLayout) -> tuple[te.Tensor, te.Tensor | None]:
    """(codes, scales or None): a kernel's inputs for the packed weight."""
    codes = te.placeholder((layout.nbytes,), "int8", name="codes")
    shape = layout.scale_shape
    scales = te.placeholder(shape, layout.scale_dtype, name="scales") if shape else None
    return codes, scales
