"""Fixed-point types the HLS backend picks, and the lookup tables it computes at build time.

Rules (the README's "what precision each thing gets"):
- weights: the quantization decision's `fixed<W,I>` (auto-I families resolved on the
  tensor actually stored, e.g. after folding batch norm), else the uniform default;
- biases, norm affines and other constants: `const_type` (16 or 18 bits, integer bits
  from the data's range, as `ir.quant`'s auto fixed formats choose them);
- accumulators: exact, see `acc_type`;
- tables: 18 bits, `TABLE` for values in [-2, 2), `UNIT` for values in (0.5, 1).

Tables are sampled at the centre of each bin. Indexing uses the raw integer of the input,
so it is exact integer arithmetic in C++ and in the emulation alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from backends.base import BackendError
from backends.hls.layers import Const, SoftmaxTables
from ir.quant.fixed import FixedPoint

TABLE = FixedPoint(18, 2, True, "AP_RND_CONV", "AP_SAT")
UNIT = FixedPoint(18, 1, True, "AP_RND_CONV", "AP_SAT")
EXACT_BITS = 53  # the emulation sums integers in float64: exact below 2^53
EXP_RANGE_LOG2 = 3  # softmax's exp table covers max - x in [0, 8)


def auto_type(values: torch.Tensor, width: int, q_mode: str = "AP_RND_CONV", o_mode: str = "AP_SAT") -> FixedPoint:
    """`fixed<width, I>` with I = floor(log2(max|x|)) + 2, the rule of `ir.quant`'s auto formats."""
    amax = float(values.detach().abs().max()) if values.numel() else 0.0
    int_bits = math.floor(math.log2(amax)) + 2 if amax > 0 else 1
    return FixedPoint(width, int_bits, True, q_mode, o_mode)


def const_type(values: torch.Tensor, width: int = 16) -> FixedPoint:
    return auto_type(values, width)


def make_const(name: str, values: torch.Tensor, t: FixedPoint) -> Const:
    return Const(name, t.to_integer(values.detach().to(torch.float64)), t)


def max_abs(t: FixedPoint) -> float:
    """The largest magnitude a value of type t can have."""
    return 2.0 ** (t.int_bits - 1) if t.signed else t.max_value


def acc_type(bound: float, frac: int, where: str) -> FixedPoint:
    """An accumulator that holds any sum up to `bound` in magnitude with `frac` fractional
    bits exactly (AP_TRN, AP_WRAP: nothing is ever rounded or wrapped in range)."""
    int_bits = math.floor(math.log2(bound)) + 2 if bound > 0 else 1
    width = int_bits + frac
    if width > EXACT_BITS:
        raise BackendError(
            f"{where}: an exact accumulator needs {width} bits (> {EXACT_BITS}, the widest the "
            "bit-accurate emulation sums exactly); use narrower weight or activation formats")
    return FixedPoint(max(width, 1), int_bits)


def check_bits(bits: int, where: str, what: str, limit: int = 62) -> None:
    if bits > limit:
        raise BackendError(f"{where}: {what} needs {bits}-bit integers (> {limit}); use narrower formats")


# ---- elementwise lookup tables ----------------------------------------------------------


def _phi(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _phi_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# name -> (table function, gated (y = x * T(x)), log2 of the half range)
LUT_FUNCTIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool, int]] = {
    "gelu": (_phi, True, 3),
    "gelu_tanh": (_phi_tanh, True, 3),
    "silu": (torch.sigmoid, True, 3),
    "sigmoid": (torch.sigmoid, False, 3),
    "tanh": (torch.tanh, False, 2),
}


def lut_table(name: str, function: str, size: int, in_type: FixedPoint) -> tuple[Const, int, bool]:
    """(table, index shift, gated) for `function` over [-2^a, 2^a) in `size` bins."""
    fn, gated, a = LUT_FUNCTIONS[function]
    log_size = _log2_size(size)
    centers = -(2.0**a) + (torch.arange(size, dtype=torch.float64) + 0.5) * (2.0 ** (a + 1) / size)
    shift = in_type.frac_bits - (log_size - 1 - a)
    return make_const(name, fn(centers), TABLE), shift, gated


def softmax_tables(prefix: str, in_type: FixedPoint, size: int) -> SoftmaxTables:
    log_size = _log2_size(size)
    d = (torch.arange(size, dtype=torch.float64) + 0.5) * (2.0**EXP_RANGE_LOG2 / size)
    exp = make_const(f"{prefix}_exp", torch.exp(-d), TABLE)
    mu = 1.0 + (torch.arange(size, dtype=torch.float64) + 0.5) / size
    recip = make_const(f"{prefix}_recip", 1.0 / mu, UNIT)
    return SoftmaxTables(exp, in_type.frac_bits - (log_size - EXP_RANGE_LOG2), recip, log_size)


def rsqrt_table(name: str, size: int) -> tuple[Const, int]:
    """1/sqrt(mu) for mu in [1, 4): entry h * 2^b + i is the centre of bin i of octave h."""
    bits = _log2_size(size) - 1
    i = torch.arange(2**bits, dtype=torch.float64)
    mu = 1.0 + (i + 0.5) / 2**bits
    values = torch.cat([torch.rsqrt(mu), torch.rsqrt(2.0 * mu)])
    return make_const(name, values, UNIT), bits


def _log2_size(size: int) -> int:
    if size < 4 or size & (size - 1):
        raise BackendError(f"hls: table-size must be a power of two >= 4, got {size}")
    return size.bit_length() - 1
