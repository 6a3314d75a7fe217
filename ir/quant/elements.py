"""Element codecs: how one number becomes a raw bit pattern and back, exactly.

A quantization format (`formats.py`) is an element codec plus a scaling rule. The codecs
here work on float64 tensors (which hold every float32 exactly) and return raw bit
patterns as int64 tensors (`0 <= code < 2**bits`), so every later step (packing, the IR's
`kiln.dequantize`, a backend's kernel) agrees on the same integers.

- `FloatElement` is a sign / exponent / mantissa minifloat (FP8 E4M3 and E5M2, FP6 E2M3
  and E3M2, FP4 E2M1 of the OCP MX spec, and bf16 / fp16): round to nearest, ties to
  even, then saturate to the largest finite value (the MX spec's rule for elements; the
  `saturate=False` mode gives IEEE-style overflow to inf / NaN, which is what torch's
  float8 casts do, so tests can compare against them).
- `IntElement` is a two's complement integer with `frac` fractional bits (int8 and int4
  with a float scale have frac 0; MXINT8 has frac 6, so its values are k / 64). Rounding
  is to nearest, ties to even; the range is symmetric (-(2^(b-1) - 1) .. 2^(b-1) - 1), so
  the most negative code is never produced (the MX spec allows an implementation to do so
  for MXINT8, and it keeps int symmetric quantization unbiased).

The bit-level encoder is written out (frexp for the exponent, a power-of-two multiply for
the quantum, `torch.round` for ties-to-even) instead of borrowing torch's float8 casts:
there are no torch dtypes for FP6 / FP4, and for FP8 the tests check the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2**e for an integer tensor, exactly, as float64."""
    return torch.ldexp(torch.ones_like(e, dtype=torch.float64), e.to(torch.int64))


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """floor(log2(a)) for a > 0 (exact, via frexp); 0 maps to a very negative number."""
    _, ex = torch.frexp(a.to(torch.float64))
    return torch.where(a > 0, ex.to(torch.int64) - 1, torch.full_like(ex, -100000, dtype=torch.int64))


@dataclass(frozen=True)
class FloatElement:
    """A minifloat: 1 sign bit, `ebits` exponent bits (bias `bias`), `mbits` mantissa bits.

    `max_value` is the largest finite magnitude; `has_inf` says whether the all-ones
    exponent with a zero mantissa is infinity (IEEE-like E5M2, bf16, fp16); `nan_code`
    is the positive NaN pattern (None where the format has no NaN: FP6, FP4).
    """

    name: str
    ebits: int
    mbits: int
    bias: int
    max_value: float
    has_inf: bool = False
    nan_code: int | None = None

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest normal number (the MX spec's emax_elem)."""
        return math.floor(math.log2(self.max_value))

    def round(self, v: torch.Tensor, saturate: bool = True) -> torch.Tensor:
        """The nearest representable value (ties to even), as float64; see `encode`."""
        return self.decode(self.encode(v, saturate)).to(torch.float64)

    def encode(self, v: torch.Tensor, saturate: bool = True) -> torch.Tensor:
        """Raw bit patterns (int64) of `v` rounded to nearest-even.

        Magnitudes past `max_value` saturate to it (or, with `saturate=False`, become
        infinity where the format has one, else NaN). NaN inputs become the NaN pattern,
        or the largest finite value in formats without NaN.
        """
        v = v.to(torch.float64)
        sign = torch.signbit(v).to(torch.int64)
        a = v.abs()
        nan = torch.isnan(a)
        a = torch.where(nan, torch.zeros_like(a), a)
        e = torch.clamp(floor_log2(a), min=self.emin)
        quantum = _pow2(e - self.mbits)
        q = torch.round(a / quantum) * quantum  # exact: a / 2^k is exact in float64
        over = q > self.max_value
        q = torch.where(over, torch.full_like(q, self.max_value), q)
        # Rounding may carry into the next binade; recompute the exponent of q itself.
        eq = torch.clamp(floor_log2(q), min=self.emin)
        normal = q >= 2.0**self.emin
        exp_field = torch.where(normal, eq + self.bias, torch.zeros_like(eq))
        man = torch.where(
            normal,
            q / _pow2(eq - self.mbits) - 2.0**self.mbits,
            q / 2.0 ** (self.emin - self.mbits),
        ).to(torch.int64)
        code = (exp_field << self.mbits) | man
        if not saturate and self.has_inf:
            code = torch.where(over, torch.full_like(code, ((1 << self.ebits) - 1) << self.mbits), code)
        elif not saturate and self.nan_code is not None:
            code = torch.where(over, torch.full_like(code, self.nan_code), code)
        nan_fill = self.nan_code if self.nan_code is not None else self.max_code
        code = torch.where(nan, torch.full_like(code, nan_fill), code)
        return (sign << (self.bits - 1)) | code

    @property
    def max_code(self) -> int:
        """Pattern of +max_value."""
        e = math.floor(math.log2(self.max_value))
        man = round(self.max_value / 2.0 ** (e - self.mbits)) - (1 << self.mbits)
        return ((e + self.bias) << self.mbits) | man

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """float32 values of raw patterns (exact: every minifloat here fits in float32)."""
        c = codes.to(torch.int64)
        sign = (c >> (self.bits - 1)) & 1
        ef = (c >> self.mbits) & ((1 << self.ebits) - 1)
        man = (c & ((1 << self.mbits) - 1)).to(torch.float64)
        sub = man * 2.0 ** (self.emin - self.mbits)
        norm = (man + 2.0**self.mbits) * _pow2(ef - self.bias - self.mbits)
        val = torch.where(ef == 0, sub, norm)
        top = ef == (1 << self.ebits) - 1
        if self.has_inf:
            val = torch.where(top & (man == 0), torch.full_like(val, math.inf), val)
            val = torch.where(top & (man != 0), torch.full_like(val, math.nan), val)
        elif self.nan_code is not None:
            val = torch.where((c & ((1 << (self.bits - 1)) - 1)) == self.nan_code,
                              torch.full_like(val, math.nan), val)
        return torch.where(sign == 1, -val, val).to(torch.float32)


@dataclass(frozen=True)
class IntElement:
    """A `bits`-bit two's complement integer with `frac` fractional bits (value = k / 2^frac)."""

    name: str
    bits: int
    frac: int = 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def max_value(self) -> float:
        return self.qmax / 2.0**self.frac

    @property
    def emax(self) -> int:
        """The MX spec's emax_elem: 0 for MXINT8 (values below 2)."""
        return math.floor(math.log2(self.max_value))

    def encode(self, v: torch.Tensor, saturate: bool = True) -> torch.Tensor:
        k = torch.round(v.to(torch.float64) * 2.0**self.frac)
        k = torch.nan_to_num(k, nan=0.0)
        k = torch.clamp(k, -self.qmax, self.qmax).to(torch.int64)
        return k & ((1 << self.bits) - 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        c = codes.to(torch.int64) & ((1 << self.bits) - 1)
        k = torch.where(c >= (1 << (self.bits - 1)), c - (1 << self.bits), c)
        return (k.to(torch.float64) / 2.0**self.frac).to(torch.float32)


# OCP MX v1.0 element types, plus the IEEE / bfloat16 halves.
FP8_E4M3 = FloatElement("e4m3", 4, 3, 7, 448.0, has_inf=False, nan_code=0x7F)
FP8_E5M2 = FloatElement("e5m2", 5, 2, 15, 57344.0, has_inf=True, nan_code=0x7F)
FP6_E2M3 = FloatElement("e2m3", 2, 3, 1, 7.5)
FP6_E3M2 = FloatElement("e3m2", 3, 2, 3, 28.0)
FP4_E2M1 = FloatElement("e2m1", 2, 1, 1, 6.0)
FP16 = FloatElement("fp16", 5, 10, 15, 65504.0, has_inf=True, nan_code=0x7E00)
BF16 = FloatElement("bf16", 8, 7, 127, (2 - 2**-7) * 2.0**127, has_inf=True, nan_code=0x7FC0)
INT8 = IntElement("int8", 8)
INT4 = IntElement("int4", 4)
MXINT8 = IntElement("mxint8", 8, frac=6)
