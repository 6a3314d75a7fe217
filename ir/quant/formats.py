"""Quantization formats as data: an element codec, a grouping, and a scaling rule.

Every format quantizes a 2-D "row view" of a tensor: rows are independent (output
channels of a weight, tokens of an activation) and the last dim K is the one a matmul
reduces over, so groups and MX blocks run along K. `to_rows` / `from_rows` make the view
of any tensor for a given axis. A format turns the view into a `QTensor` (raw element
codes plus per-group scales) and back, deterministically and exactly:

- scale "f32" / "f16" (absmax): s = max|group| / element_max in float32 (1 when the group
  is all zero; rounded to float16 first for "f16"), codes = encode(x / s) with the
  division in float32, value = decode(code) * s in float32;
- scale "e8m0" (OCP MX): the shared exponent is e = floor(log2(max|block|)) - emax_elem,
  clamped to [-127, 127] (an all-zero block gets -127), stored as the biased byte e + 127;
  codes = encode(x * 2^-e) (exact), value = decode(code) * 2^e;
- scale "none" (fixed point, bf16, fp16): codes = encode(x).

Groups: `group > 0` elements per scale along K (a shorter last group, as if zero padded);
`group == 0` one scale per row (per-channel); `group == -1` one scale for the tensor.

`nbytes(rows, k)` is the exact storage of the packed codes plus the scales, which is what
the quantization pass budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ir.quant.elements import FloatElement, IntElement, floor_log2
from ir.quant.fixed import FixedPoint
from ir.quant.packing import pack, packed_nbytes, unpack

Element = FloatElement | IntElement | FixedPoint
PER_ROW = 0
PER_TENSOR = -1
SCALE_BYTES = {"f32": 4, "f16": 2, "e8m0": 1, "none": 0}
SCALE_DTYPES = {"f32": torch.float32, "f16": torch.float16, "e8m0": torch.uint8}


@dataclass(frozen=True)
class QTensor:
    """A quantized row view: `codes` (rows, k) int64 raw patterns; `scales` (rows|1, groups|1)
    in the storage dtype (float32, float16, or uint8 biased exponents), None when scale-free."""

    format: str
    codes: torch.Tensor
    scales: torch.Tensor | None

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def k(self) -> int:
        return int(self.codes.shape[1])


@dataclass(frozen=True)
class QuantFormat:
    name: str
    element: Element
    group: int
    scale: str
    family: str  # "int" | "fp8" | "mx" | "bfp" | "fixed" | "float"
    doc: str = ""

    @property
    def bits(self) -> int:
        return self.element.bits

    # ---- sizes -----------------------------------------------------------------------
    def ngroups(self, k: int) -> int:
        return math.ceil(k / self.group) if self.group > 0 else 1

    def scale_shape(self, rows: int, k: int) -> tuple[int, int]:
        if self.scale == "none":
            return (0, 0)
        if self.group == PER_TENSOR:
            return (1, 1)
        return (rows, self.ngroups(k))

    def nbytes(self, rows: int, k: int) -> int:
        """Exact bytes of the packed codes and the scales of a (rows, k) view."""
        r, g = self.scale_shape(rows, k)
        return packed_nbytes(rows * k, self.bits) + r * g * SCALE_BYTES[self.scale]

    def bits_per_weight(self, rows: int = 1, k: int = 4096) -> float:
        return 8.0 * self.nbytes(rows, k) / (rows * k)

    @property
    def scale_dtype(self) -> torch.dtype | None:
        return SCALE_DTYPES.get(self.scale)

    def resolve(self, x: torch.Tensor | float) -> QuantFormat:
        """The concrete format for data `x` (or its max magnitude); only auto fixed point changes."""
        return self

    # ---- numerics --------------------------------------------------------------------
    def quantize(self, x: torch.Tensor, scale: float | None = None) -> QTensor:
        """Quantize a (rows, k) view; `scale` fixes a per-tensor scale (static activations)."""
        x = _as_rows(x)
        if self.scale == "none":
            return QTensor(self.name, self.element.encode(x), None)
        blocks = self._blocks(x)
        amax = blocks.abs().amax(dim=-1)
        amax = torch.nan_to_num(amax, nan=0.0)
        if self.scale == "e8m0":
            e = torch.clamp(floor_log2(amax) - self.element.emax, -127, 127)
            scaled = torch.ldexp(blocks.to(torch.float64), -e[..., None])
            codes = self.element.encode(scaled)
            scales = (e + 127).to(torch.uint8)
        else:
            if scale is not None:
                s = torch.full(amax.shape, float(scale), dtype=torch.float32)
            else:
                s = amax / torch.tensor(self.element.max_value, dtype=torch.float32)
            s = torch.where((s > 0) & torch.isfinite(s), s, torch.ones_like(s))
            if self.scale == "f16":
                s = s.clamp(2.0**-24, 65504.0).to(torch.float16).to(torch.float32)
            codes = self.element.encode(blocks / s[..., None])
            scales = s.to(SCALE_DTYPES[self.scale])
        return QTensor(self.name, self._unblock(codes, x.shape), scales)

    def dequantize(self, q: QTensor) -> torch.Tensor:
        """float32 (rows, k) values of a QTensor of this format."""
        values = self.element.decode(q.codes)
        if self.scale == "none":
            return values
        blocks = self._blocks(values)
        if self.scale == "e8m0":
            e = q.scales.to(torch.int64) - 127
            out = torch.ldexp(blocks.to(torch.float64), e[..., None]).to(torch.float32)
        else:
            out = blocks * q.scales.to(torch.float32)[..., None]
        return self._unblock(out, values.shape)

    def fake_quantize(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """dequantize(quantize(x)) of a (rows, k) view."""
        return self.resolve(x).dequantize(self.resolve(x).quantize(x, scale))

    # ---- storage ---------------------------------------------------------------------
    def pack(self, q: QTensor) -> torch.Tensor:
        """The codes as packed bytes (uint8); see `packing.py` for the bit layout."""
        return pack(q.codes, self.bits)

    def unpack(self, data: torch.Tensor, scales: torch.Tensor | None, rows: int, k: int) -> QTensor:
        codes = unpack(data, self.bits, rows * k).reshape(rows, k)
        if scales is not None and self.scale == "e8m0":
            scales = scales.view(torch.uint8) if scales.dtype == torch.int8 else scales
        return QTensor(self.name, codes, scales.reshape(self.scale_shape(rows, k)) if scales is not None else None)

    # ---- grouping --------------------------------------------------------------------
    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        rows, k = x.shape
        if self.group == PER_TENSOR:
            return x.reshape(1, 1, rows * k)
        if self.group == PER_ROW:
            return x.reshape(rows, 1, k)
        g = self.group
        pad = (-k) % g
        if pad:
            x = torch.cat([x, x.new_zeros(rows, pad)], dim=1)
        return x.reshape(rows, -1, g)

    def _unblock(self, blocks: torch.Tensor, shape) -> torch.Tensor:
        rows, k = shape
        return blocks.reshape(rows, -1)[:, :k]


@dataclass(frozen=True)
class AutoFixedFormat(QuantFormat):
    """`fixed<W, auto>`: W bits, integer bits chosen from the data's max magnitude.

    I = floor(log2(max|x|)) + 2 is the fewest integer bits (sign included) that hold max|x|
    without saturating; `resolve` returns the concrete `fixed<W,I,Q,O>`, and that name is
    what the IR records, so an HLS backend reads a plain `ap_fixed` type.
    """

    def resolve(self, x: torch.Tensor | float) -> QuantFormat:
        if isinstance(x, torch.Tensor):
            amax = float(torch.nan_to_num(x.abs()).max()) if x.numel() else 0.0
        else:
            amax = abs(float(x))
        int_bits = (math.floor(math.log2(amax)) + 2) if amax > 0 else 1
        base = self.element
        assert isinstance(base, FixedPoint)
        concrete = replace(base, int_bits=int_bits)
        return QuantFormat(concrete.name, concrete, PER_TENSOR, "none", "fixed", self.doc)

    def quantize(self, x: torch.Tensor, scale: float | None = None) -> QTensor:
        return self.resolve(_as_rows(x)).quantize(x)

    def dequantize(self, q: QTensor) -> torch.Tensor:
        raise ValueError(f"{self.name} is a family; dequantize with the concrete format {q.format}")


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"formats quantize a (rows, k) view; got shape {tuple(x.shape)} (use to_rows)")
    return x.to(torch.float32)


def to_rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """The (rows, k) view with k = x.shape[axis]: `axis` moved last, the rest flattened."""
    axis = axis % x.dim()
    return x.movedim(axis, -1).reshape(-1, x.shape[axis])


def from_rows(view: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """Inverse of `to_rows` for a tensor of `shape`."""
    axis = axis % len(shape)
    moved = [d for i, d in enumerate(shape) if i != axis] + [shape[axis]]
    return view.reshape(moved).movedim(-1, axis)


def rows_of(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    k = shape[axis % len(shape)]
    return (math.prod(shape) // k if k else 0, k)
