"""Packing raw codes into bytes and back: one LSB-first bitstream per tensor.

Codes are taken in row-major order and laid end to end: code i occupies bits
[i*b, (i+1)*b) of the stream, bit 0 of the stream being bit 0 (the least significant) of
byte 0. For 4-bit codes this is the common nibble layout (byte = c0 | c1 << 4); for 8 bits
it is one code per byte; 6-bit codes straddle bytes (4 codes in 3 bytes). The last byte is
zero-padded. A backend that reads packed weights implements exactly this layout, so
`len(pack(codes, b)) == ceil(numel * b / 8)` is also the byte count the ILP budgets.
"""

from __future__ import annotations

import torch


def packed_nbytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 tensor of `packed_nbytes(codes.numel(), bits)` bytes (see the module doc)."""
    if not 1 <= bits <= 32:
        raise ValueError(f"cannot pack {bits}-bit codes")
    flat = codes.reshape(-1).to(torch.int64) & ((1 << bits) - 1)
    if bits == 8:
        return flat.to(torch.uint8)
    if bits in (16, 32):
        nb = bits // 8
        shifts = torch.arange(nb, dtype=torch.int64) * 8
        return ((flat[:, None] >> shifts) & 0xFF).reshape(-1).to(torch.uint8)
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte
        per = 8 // bits
        pad = (-flat.numel()) % per
        flat = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, per)
        shifts = torch.arange(per, dtype=torch.int64) * bits
        return (flat << shifts).sum(dim=1).to(torch.uint8)
    stream = ((flat[:, None] >> torch.arange(bits, dtype=torch.int64)) & 1).reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)
    return (stream << torch.arange(8, dtype=torch.int64)).sum(dim=1).to(torch.uint8)


def unpack(data: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """int64 codes (0 <= code < 2**bits) from a packed byte tensor (uint8 or int8 bytes)."""
    raw = data.reshape(-1)
    raw = raw.view(torch.uint8) if raw.dtype == torch.int8 else raw
    need = packed_nbytes(numel, bits)
    if raw.numel() != need:
        raise ValueError(f"{numel} codes of {bits} bits need {need} bytes, got {raw.numel()}")
    b = raw.to(torch.int64)
    if bits == 8:
        return b
    if bits in (16, 32):
        nb = bits // 8
        shifts = torch.arange(nb, dtype=torch.int64) * 8
        return (b.reshape(-1, nb) << shifts).sum(dim=1)[:numel]
    if 8 % bits == 0:
        per = 8 // bits
        shifts = torch.arange(per, dtype=torch.int64) * bits
        return ((b[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:numel]
    stream = ((b[:, None] >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: numel * bits]
    return (stream.reshape(numel, bits) << torch.arange(bits, dtype=torch.int64)).sum(dim=1)
