"""`fixed<W,I>`: Xilinx `ap_fixed` / `ap_ufixed` semantics, emulated bit for bit.

W is the total width and I the integer bits (including the sign bit when signed), so the
value of a pattern k is k * 2^-(W-I). Converting a real number takes two steps, in this
order, exactly as the `ap_fixed` constructor from a double does:

1. quantization (what happens to bits below the LSB), `q_mode`:
   AP_TRN (floor, the default), AP_TRN_ZERO (toward zero), AP_RND (nearest, ties toward
   +inf), AP_RND_ZERO (ties toward zero), AP_RND_MIN_INF (ties toward -inf), AP_RND_INF
   (ties away from zero), AP_RND_CONV (ties to even);
2. overflow (what happens past the range), `o_mode`:
   AP_WRAP (keep the low W bits, the default), AP_SAT (clamp to [min, max]), AP_SAT_ZERO
   (overflow gives 0), AP_SAT_SYM (clamp to [-max, max], signed only).

The emulation is exact for inputs that are float32 or float64 values with at most 53
significant bits after scaling: x * 2^F is exact in float64, and the rounding and
wrapping are done on integers. An HLS backend can therefore compare its C simulation
with `FixedPoint.quantize` and expect equality, not closeness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

Q_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV")
O_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM")

_SPEC = re.compile(
    r"^(?P<kind>fixed|ufixed)<\s*(?P<w>-?\d+)\s*,\s*(?P<i>-?\d+)\s*"
    r"(?:,\s*(?P<q>AP_\w+)\s*)?(?:,\s*(?P<o>AP_\w+)\s*)?>$"
)


@dataclass(frozen=True)
class FixedPoint:
    """One `ap_fixed<W, I, Q, O>` (or `ap_ufixed` when `signed` is False) type."""

    width: int
    int_bits: int
    signed: bool = True
    q_mode: str = "AP_TRN"
    o_mode: str = "AP_WRAP"

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 62:
            raise ValueError(f"fixed<{self.width},{self.int_bits}>: width must be in 1..62")
        if self.q_mode not in Q_MODES:
            raise ValueError(f"unknown quantization mode {self.q_mode!r}; use one of {', '.join(Q_MODES)}")
        if self.o_mode not in O_MODES:
            raise ValueError(f"unknown overflow mode {self.o_mode!r}; use one of {', '.join(O_MODES)}")
        if self.o_mode == "AP_SAT_SYM" and not self.signed:
            raise ValueError("AP_SAT_SYM needs a signed type")

    # ---- naming ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        kind = "fixed" if self.signed else "ufixed"
        modes = ""
        if (self.q_mode, self.o_mode) != ("AP_TRN", "AP_WRAP"):
            modes = f",{self.q_mode}" + (f",{self.o_mode}" if self.o_mode != "AP_WRAP" else "")
        return f"{kind}<{self.width},{self.int_bits}{modes}>"

    @property
    def cpp_type(self) -> str:
        """The C++ type an HLS backend declares, e.g. `ap_fixed<8,2,AP_RND_CONV,AP_SAT>`."""
        kind = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{kind}<{self.width},{self.int_bits},{self.q_mode},{self.o_mode}>"

    @classmethod
    def parse(cls, text: str) -> FixedPoint:
        """`fixed<16,6>`, `fixed<8,3,AP_RND_CONV,AP_SAT>`, `ufixed<8,0>`."""
        m = _SPEC.match(text.replace(" ", ""))
        if not m:
            raise ValueError(f"bad fixed-point type {text!r}; expected e.g. fixed<16,6> or fixed<8,3,AP_RND_CONV,AP_SAT>")
        return cls(int(m["w"]), int(m["i"]), m["kind"] == "fixed", m["q"] or "AP_TRN", m["o"] or "AP_WRAP")

    # ---- range -----------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return self.width

    @property
    def frac_bits(self) -> int:
        return self.width - self.int_bits

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac_bits

    @property
    def kmin(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def kmax(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def max_value(self) -> float:
        return self.kmax * self.lsb

    # ---- conversion ------------------------------------------------------------------
    def to_integer(self, x: torch.Tensor) -> torch.Tensor:
        """The integer k (int64) whose value k * lsb is `x` converted to this type."""
        scaled = torch.ldexp(x.to(torch.float64), torch.tensor(self.frac_bits))
        k = _round(scaled, self.q_mode)
        return _overflow(k, self)

    def encode(self, x: torch.Tensor, saturate: bool = True) -> torch.Tensor:
        """Raw W-bit patterns (two's complement for signed types). `saturate` is unused:
        overflow follows `o_mode`, as in C++."""
        return self.to_integer(x) & ((1 << self.width) - 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """float32 values of raw patterns (exact whenever W <= 24, as for every weight format)."""
        return self.value_of(self.signed_integer(codes)).to(torch.float32)

    def signed_integer(self, codes: torch.Tensor) -> torch.Tensor:
        c = codes.to(torch.int64) & ((1 << self.width) - 1)
        if self.signed:
            c = torch.where(c >= (1 << (self.width - 1)), c - (1 << self.width), c)
        return c

    def value_of(self, k: torch.Tensor) -> torch.Tensor:
        return torch.ldexp(k.to(torch.float64), torch.tensor(-self.frac_bits))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """`x` converted to this type and back, as float64 (what `(double)ap_fixed(x)` gives)."""
        return self.value_of(self.to_integer(x))


def _round(s: torch.Tensor, mode: str) -> torch.Tensor:
    fl = torch.floor(s)
    frac = s - fl  # exact in float64
    if mode == "AP_TRN":
        r = fl
    elif mode == "AP_TRN_ZERO":
        r = torch.trunc(s)
    else:
        up = fl + 1
        tie = frac == 0.5
        nearest = torch.where(frac > 0.5, up, fl)
        tie_value = {
            "AP_RND": up,
            "AP_RND_ZERO": torch.where(s > 0, fl, up),
            "AP_RND_MIN_INF": fl,
            "AP_RND_INF": torch.where(s > 0, up, fl),
            "AP_RND_CONV": torch.where(torch.remainder(fl, 2) == 0, fl, up),
        }[mode]
        r = torch.where(tie, tie_value, nearest)
    return torch.nan_to_num(r, nan=0.0, posinf=2.0**62, neginf=-(2.0**62)).clamp(-(2.0**62), 2.0**62).to(torch.int64)


def _overflow(k: torch.Tensor, t: FixedPoint) -> torch.Tensor:
    if t.o_mode == "AP_WRAP":
        m = k & ((1 << t.width) - 1)
        if t.signed:
            m = torch.where(m >= (1 << (t.width - 1)), m - (1 << t.width), m)
        return m
    over = (k > t.kmax) | (k < t.kmin)
    if t.o_mode == "AP_SAT_ZERO":
        return torch.where(over, torch.zeros_like(k), k)
    lo = -t.kmax if t.o_mode == "AP_SAT_SYM" else t.kmin
    return torch.clamp(k, lo, t.kmax)
