"""exp and SiLU as TIR *expressions*, for kernels that apply them inside another compute.

`legalize.py` uses TOPI's `fast_exp`, which takes and returns a whole tensor: fine for an
elementwise kernel, unusable inside the write-back of a convolution tile, where the value is
an expression (`conv_direct.Tail`). `tirx.exp` would lower to a scalar `expf` call per
element (7x slower than eager on a softmax, NOTES.md). So the same method, as an expression
LLVM vectorizes: range reduction by powers of two (Cody-Waite split of ln 2), a degree-6
Taylor polynomial on |r| <= ln(2)/2, and 2^k built in the exponent bits. Relative error
about 2e-7 on float32's finite range; inputs beyond +-88 saturate to 0 and inf's neighbour.
"""

from __future__ import annotations

from tvm import tirx

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^10
_LN2_LO = -2.12194440e-4
_TAYLOR = (1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720)


def _f(value: float) -> tirx.PrimExpr:
    return tirx.const(value, "float32")


def fast_exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """e^x for a float32 expression."""
    x = tirx.max(tirx.min(x, _f(88.0)), _f(-87.0))
    k = tirx.floor(x * _f(_LOG2E) + _f(0.5))
    r = x - k * _f(_LN2_HI) - k * _f(_LN2_LO)
    poly = _f(_TAYLOR[-1])
    for c in reversed(_TAYLOR[:-1]):
        poly = poly * r + _f(c)
    scale = tirx.reinterpret("float32", (k.astype("int32") + 127) << 23)
    return poly * scale


def silu(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """x * sigmoid(x) = x / (1 + e^-x)."""
    return x / (_f(1.0) + fast_exp(-x))
