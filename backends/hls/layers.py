"""The HLS graph: one spec per generated C++ function, the contract between three readers.

`lower.py` builds it from kiln IR, `emulate.py` computes it bit for bit in torch, and
`cpp_layers.py` prints it as C++; all three read the same fields, so a field's meaning is
defined here once. Shapes are per sample: the batch dim (dim 0 of every activation) is
the loop the C++ bridge runs around the top function, one sample per call, as hls4ml's
testbench does.

Values are fixed point: a tensor of type `fixed<W,I>` holds raw integers k with value
k * 2^-(W-I). Every layer computes in exact integer arithmetic (products and sums are
widened, never rounded) and rounds once, into its output type, with that type's
quantization and overflow modes; the exceptions, where an intermediate is rounded on
purpose, are named in the layer's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ir.quant.fixed import FixedPoint


@dataclass
class Tensor:
    """An activation: per-sample shape, fixed-point type (mutable until a consumer reads it)."""

    name: str
    shape: tuple[int, ...]
    type: FixedPoint

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Const:
    """A constant array (weights, biases, tables) as raw integers of `type`."""

    name: str
    codes: torch.Tensor  # int64
    type: FixedPoint

    def values(self) -> torch.Tensor:
        return self.type.value_of(self.codes)

    @property
    def numel(self) -> int:
        return int(self.codes.numel())


@dataclass
class Layer:
    name: str
    origin: str  # the kiln op it comes from, e.g. "kiln.linear (op 7)"
    inputs: list[Tensor]
    output: Tensor

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def consts(self) -> list[Const]:
        out: list[Const] = []
        for v in vars(self).values():
            if isinstance(v, Const):
                out.append(v)
            elif isinstance(v, SoftmaxTables):
                out += [v.exp, v.recip]
        return out


@dataclass
class Dense(Layer):
    """y[p, o] = out(b[o] + sum_i x[p, i] * w[o, i]) over `rows` positions; the sum is exact
    in `acc` (its fractional bits hold every product and the bias, its integer bits the
    worst case of the weights over the input type's range; AP_WRAP)."""

    weight: Const = None  # type: ignore[assignment]  # [n_out, n_in]
    bias: Const | None = None
    acc: FixedPoint = None  # type: ignore[assignment]
    reuse: int = 1

    @property
    def n_in(self) -> int:
        return int(self.weight.codes.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.codes.shape[0])

    @property
    def rows(self) -> int:
        return self.inputs[0].numel // self.n_in

    @property
    def mults(self) -> int:
        return self.n_in * self.n_out


@dataclass
class Conv2d(Dense):
    """A dense layer over the zero-padded patches of a CHW image (weight [O, C*kh*kw],
    the patch index c*kh*kw + ky*kw + kx, torch's OIHW order); one row per output pixel."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def rows(self) -> int:
        return self.output.shape[1] * self.output.shape[2]


@dataclass
class Matmul(Layer):
    """y = out(a @ b) over equal batch dims (or a rank-2 b shared by all); exact in `acc`."""

    acc: FixedPoint = None  # type: ignore[assignment]
    reuse: int = 1

    @property
    def dims(self) -> tuple[int, int, int, int]:
        """(batch, L, K, N)."""
        a, b = self.inputs[0].shape, self.inputs[1].shape
        return math.prod(a[:-2]), a[-2], a[-1], b[-1]

    @property
    def rows(self) -> int:
        batch, length, _, _ = self.dims
        return batch * length

    @property
    def mults(self) -> int:
        _, _, k, n = self.dims
        return k * n


@dataclass
class SoftmaxTables:
    """exp(-d) for d in [0, 2^exp_range_log2) and 1/mu for mu in [1, 2), see `tables.py`."""

    exp: Const
    exp_shift: int  # idx = clamp(d >> exp_shift) for d = max - x in the input's raw units
    recip: Const
    recip_bits: int  # the reciprocal table has 2^recip_bits entries
    wide_frac: int = 48  # fractional bits of the wide value the result is rounded from


@dataclass
class Softmax(Layer):
    """Softmax over the last dim: e = exp table at (max - x), s = sum e (exact),
    1/s from a reciprocal table indexed by s's leading bits, y = out(e * (1/s))."""

    tables: SoftmaxTables = None  # type: ignore[assignment]

    @property
    def n(self) -> int:
        return self.inputs[0].shape[-1]

    @property
    def rows(self) -> int:
        return self.inputs[0].numel // self.n


@dataclass
class Attention(Layer):
    """softmax(q k^T * scale) v per (batch, query row). Rounded on purpose: the scaled
    scores into `score` (the softmax input) and the probabilities into `prob`."""

    scale: Const = None  # type: ignore[assignment]  # a scalar
    score_acc: FixedPoint = None  # type: ignore[assignment]
    score: FixedPoint = None  # type: ignore[assignment]
    prob: FixedPoint = None  # type: ignore[assignment]
    out_acc: FixedPoint = None  # type: ignore[assignment]
    tables: SoftmaxTables = None  # type: ignore[assignment]
    causal: bool = False
    reuse: int = 1

    @property
    def dims(self) -> tuple[int, int, int, int, int]:
        """(batch, L, S, D, Dv)."""
        q, k, v = (t.shape for t in self.inputs)
        return math.prod(q[:-2]), q[-2], k[-2], q[-1], v[-1]

    @property
    def rows(self) -> int:
        batch, length, _, _, _ = self.dims
        return batch * length

    @property
    def mults(self) -> int:
        _, _, s, d, dv = self.dims
        return s * d + s * dv


@dataclass
class LayerNorm(Layer):
    """Layer norm over the last `n` elements. Integer steps (see `emulate.layer_norm`):
    mean and d = x - mean with `guard` extra fractional bits, variance floored to
    2*F_d - var_shift fractional bits, rstd from a table indexed by the variance's leading bits, and
    d * rstd * gamma floored to `wide_frac` bits before beta is added and the result rounded."""

    gamma: Const | None = None
    beta: Const | None = None
    rsqrt: Const = None  # type: ignore[assignment]
    rsqrt_bits: int = 9  # the table has 2 * 2^rsqrt_bits entries (two octaves)
    eps: float = 1e-5
    guard: int = 2
    inv_n_frac: int = 17  # 1/n as round(2^(inv_n_frac + ceil(log2 n)) / n)
    var_shift: int = 0  # even; the variance drops this many bits so it fits int64

    @property
    def n(self) -> int:
        return self.inputs[0].shape[-1]

    @property
    def rows(self) -> int:
        return self.inputs[0].numel // self.n

    @property
    def d_frac(self) -> int:
        return self.inputs[0].type.frac_bits + self.guard

    @property
    def var_frac(self) -> int:
        return 2 * self.d_frac - self.var_shift

    @property
    def eps_raw(self) -> int:
        return round(self.eps * 2.0**self.var_frac)

    @property
    def wide_frac(self) -> int:
        beta_frac = self.beta.type.frac_bits if self.beta is not None else 0
        return max(self.output.type.frac_bits, beta_frac) + 8


@dataclass
class Lut(Layer):
    """y = out(T(x)) (`gated`: y = out(x * T(x))) with T a table over [-2^range_log2,
    2^range_log2): idx = clamp((k >> shift) + size/2) for the raw input k."""

    function: str = ""
    table: Const = None  # type: ignore[assignment]
    shift: int = 0
    gated: bool = False

    @property
    def size(self) -> int:
        return self.table.numel


@dataclass
class Relu(Layer):
    pass


@dataclass
class Cast(Layer):
    """y = out(x): a conversion to another fixed-point type (a quantized activation)."""


@dataclass
class Binary(Layer):
    """y = out(a fn b), fn in add / sub / mul, exact before the rounding; `other` replaces
    the second input when it is a constant (broadcast to the sample's shape)."""

    fn: str = "add"
    other: Const | None = None


@dataclass
class ScaleShift(Layer):
    """y = out(x * scale[c] + shift[c]) with c the index along `axis` (batch norm not
    folded into a convolution)."""

    scale: Const = None  # type: ignore[assignment]
    shift: Const = None  # type: ignore[assignment]
    axis: int = 0


@dataclass
class Pool2d(Layer):
    """Max or average pooling over a CHW image (average divides by the full window, as
    torch's count_include_pad default does)."""

    mode: str = "max"
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    inv_frac: int = 0  # 1/window as round(2^inv_frac / window) when not a power of two


@dataclass
class Reduce(Layer):
    """sum / mean / max over `dims` of the sample; the output keeps the other dims in order."""

    mode: str = "sum"
    dims: tuple[int, ...] = ()
    inv_frac: int = 0

    @property
    def count(self) -> int:
        return math.prod(self.inputs[0].shape[d] for d in self.dims)


@dataclass
class Transpose(Layer):
    perm: tuple[int, ...] = ()


@dataclass
class HLSGraph:
    """The design: inputs, layers in program order, outputs; `batch` is the traced batch."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    layers: list[Layer]
    batch: int
    notes: list[str] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=dict)  # array -> bram/uram/ddr (map-memory)

    def consts(self) -> list[Const]:
        seen: dict[str, Const] = {}
        for layer in self.layers:
            for c in layer.consts():
                seen.setdefault(c.name, c)
        return list(seen.values())

    def tensors(self) -> list[Tensor]:
        out: dict[str, Tensor] = {t.name: t for t in self.inputs}
        for layer in self.layers:
            out.setdefault(layer.output.name, layer.output)
        return list(out.values())


def pow2_log(n: int) -> int | None:
    """log2(n) when n is a power of two, else None."""
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None
