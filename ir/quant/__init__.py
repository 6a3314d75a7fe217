"""Quantization numerics for the kiln IR: element codecs, formats, packing, the registry.

Public surface: `FORMATS`, `get_format`, `act_format_for`, `QuantFormat`, `QTensor`,
`FixedPoint`, `to_rows` / `from_rows` / `rows_of`, `pack` / `unpack`. Everything here is
plain torch, imported by the `kiln.quantize` / `kiln.dequantize` ops, so a backend checks
its quantized kernels bit for bit against the same functions.

Program-level tools (calibration, the outlier channel permutation, fake-quantized
evaluation) live beside it in `ir.quant.calibration`, `ir.quant.permutation` and
`ir.quant.observe`; they are imported explicitly because they need the interpreter.
"""

from __future__ import annotations

from ir.quant.fixed import FixedPoint
from ir.quant.formats import QTensor, QuantFormat, from_rows, rows_of, to_rows
from ir.quant.packing import pack, packed_nbytes, unpack
from ir.quant.registry import ACT_FORMAT, FORMATS, act_format_for, get_format

__all__ = [
    "ACT_FORMAT",
    "FORMATS",
    "FixedPoint",
    "QTensor",
    "QuantFormat",
    "act_format_for",
    "from_rows",
    "get_format",
    "pack",
    "packed_nbytes",
    "rows_of",
    "to_rows",
    "unpack",
]
