"""Real bytes of a weight or buffer in the memory tier that holds it.

The IR types every value in its compute dtype (fp32 for a captured model), but what a
memory holds is the stored element: on an FPGA the `ap_fixed<W, I>` the HLS backend emits,
on a GPU the dtype, or the packed codes and scales a quantization decision chose. Tier
capacities are counted in these bytes, so a plan for a 16-bit HLS design is not made for
twice the BRAM it needs.

FPGA (`tiers=fpga`), element width W in bits:
- a weight: the fixed-point format of the `quant` decision on the op that reads it (the
  HLS lowering stores the weight in exactly that format), else `FPGA_DEFAULT_BITS`;
- an activation: the fixed-point format of a `kiln.quantize` that reads it or of the
  `act_format` of a reader's decision (the lowering types the producer's array so), else
  `FPGA_DEFAULT_BITS`;
- bytes = ceil(numel * W / 8) (the array's bits, as the BRAM/URAM block count reads them).
GPU (`tiers=gpu`): a weight whose reader has a `quant` decision takes that format's packed
bytes (codes plus scales, `QuantFormat.nbytes`); anything else its dtype's bytes.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import DictionaryAttr
from xdsl.ir import Operation, SSAValue

from ir import dtypes
from ir.attrs import from_attr
from ir.quant import get_format

# The HLS backend's default element type is fixed<16,6> (backends/hls/config.py,
# hls4ml's default); a value no decision types is stored in 16 bits.
FPGA_DEFAULT_BITS = 16


def _decision(op: Operation) -> dict | None:
    attr = op.attributes.get("quant")
    if not isinstance(attr, DictionaryAttr):
        return None
    return {k: from_attr(v) for k, v in attr.data.items()}


def fixed_bits(name: object) -> int | None:
    try:
        fmt = get_format(str(name))
    except ValueError:
        return None
    return int(fmt.bits) if fmt.family == "fixed" else None


def _readers(value: SSAValue) -> list[Operation]:
    return [u.operation for u in value.uses]


def fpga_bits(value: SSAValue, is_weight: bool) -> int:
    """Element width of `value` in the HLS design."""
    for reader in _readers(value):
        d = _decision(reader)
        if is_weight:
            if d is not None and "format" in d and (bits := fixed_bits(d["format"])) is not None:
                return bits
            continue
        if reader.name == "kiln.quantize":
            fmt = reader.properties.get("format")
            if fmt is not None and (bits := fixed_bits(from_attr(fmt))) is not None:
                return bits
        reads_as_input = bool(reader.operands) and reader.operands[0] == value
        if d is not None and d.get("act_format") and reads_as_input and (bits := fixed_bits(d["act_format"])):
            return bits
    return FPGA_DEFAULT_BITS


def gpu_bytes(value: SSAValue, is_weight: bool) -> int:
    """Bytes of `value` on a GPU: packed quantized codes for a decided weight, else its dtype."""
    nbytes = dtypes.nbytes(value.type)
    shape = dtypes.shape_of(value.type)
    if not is_weight or len(shape) < 2:
        return nbytes
    for reader in _readers(value):
        d = _decision(reader)
        if d is None or "format" not in d:
            continue
        try:
            fmt = get_format(str(d["format"]))
        except ValueError:
            continue
        rows = shape[0]
        return int(fmt.nbytes(rows, math.prod(shape) // rows))
    return nbytes


def stored_bytes(value: SSAValue, kind: str, is_weight: bool) -> int:
    """Bytes `value` takes in a memory of target `kind` ("fpga" or "gpu")."""
    if kind == "fpga":
        numel = math.prod(dtypes.shape_of(value.type))
        return -(-numel * fpga_bits(value, is_weight) // 8)
    return gpu_bytes(value, is_weight)
