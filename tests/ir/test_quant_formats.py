"""ir/quant: element codecs against torch and by hand, packing, every format's round trip, MX rules."""

from __future__ import annotations

import math

import pytest
import torch

from ir.quant import FORMATS, get_format, pack, packed_nbytes, unpack
from ir.quant import elements as el
from ir.quant.formats import from_rows, rows_of, to_rows


def _all_values(element) -> torch.Tensor:
    vals = element.decode(torch.arange(1 << element.bits))
    return vals[torch.isfinite(vals)].unique()


def _probe_values(element, gen: torch.Generator) -> torch.Tensor:
    """Every representable value, every midpoint (the ties), and random values across binades."""
    grid = _all_values(element).double()
    mids = (grid[1:] + grid[:-1]) / 2
    rand = torch.cat([torch.randn(20000, generator=gen) * s for s in (1e-3, 0.1, 1.0, 30.0, 300.0)]).double()
    vals = torch.cat([grid, mids, rand]).float()
    return vals


# ---- FP8 against torch's float8 dtypes ---------------------------------------------------
@pytest.mark.parametrize(("element", "dtype"), [(el.FP8_E4M3, torch.float8_e4m3fn), (el.FP8_E5M2, torch.float8_e5m2)])
def test_fp8_decode_matches_torch_for_every_code(element, dtype):
    codes = torch.arange(256)
    ours = element.decode(codes)
    theirs = codes.to(torch.uint8).view(dtype).float()
    assert torch.equal(torch.isnan(ours), torch.isnan(theirs))
    finite = ~torch.isnan(theirs)
    assert torch.equal(ours[finite], theirs[finite])


@pytest.mark.parametrize(("element", "dtype", "saturate"), [
    (el.FP8_E4M3, torch.float8_e4m3fn, True),  # torch saturates E4M3FN casts to +-448
    (el.FP8_E5M2, torch.float8_e5m2, False),  # and overflows E5M2 casts to inf
])
def test_fp8_encode_matches_torch_bit_for_bit(element, dtype, saturate):
    gen = torch.Generator().manual_seed(0)
    vals = _probe_values(element, gen)
    vals = torch.cat([vals, -vals, torch.tensor([0.0, -0.0, 1e6, -1e6, math.inf, -math.inf])])
    ours = element.encode(vals, saturate=saturate)
    theirs = vals.to(dtype).view(torch.uint8).to(torch.int64)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(("element", "dtype"), [(el.BF16, torch.bfloat16), (el.FP16, torch.float16)])
def test_half_formats_match_torch(element, dtype):
    gen = torch.Generator().manual_seed(1)
    vals = torch.randn(50000, generator=gen) * 10.0 ** torch.randint(-6, 5, (50000,), generator=gen)
    ours = element.decode(element.encode(vals, saturate=False))
    assert torch.equal(ours, vals.to(dtype).float())


# ---- the OCP element types ---------------------------------------------------------------
@pytest.mark.parametrize(("element", "maximum", "emax", "count"), [
    (el.FP8_E4M3, 448.0, 8, 253), (el.FP8_E5M2, 57344.0, 15, 247), (el.FP6_E2M3, 7.5, 2, 63),
    (el.FP6_E3M2, 28.0, 4, 63), (el.FP4_E2M1, 6.0, 2, 15), (el.MXINT8, 127 / 64, 0, 256),
])
def test_element_ranges(element, maximum, emax, count):
    vals = element.decode(torch.arange(1 << element.bits))
    finite = vals[torch.isfinite(vals)]
    assert float(finite.max()) == maximum == element.max_value
    assert element.emax == emax
    assert finite.unique().numel() == count  # +0 and -0 count once; MXINT8 decodes -2, never makes it
    assert float(element.decode(element.encode(-finite.abs().max() * 2)).item()) == -maximum


def test_fp4_values_and_ties_to_even():
    assert _all_values(el.FP4_E2M1).tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, -5.0])
    want = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -4.0]
    assert el.FP4_E2M1.decode(el.FP4_E2M1.encode(x)).tolist() == want


def test_minifloat_encode_is_nearest_for_fp6():
    gen = torch.Generator().manual_seed(2)
    for element in (el.FP6_E2M3, el.FP6_E3M2):
        grid = _all_values(element).double()
        x = (torch.rand(5000, generator=gen, dtype=torch.float64) * 2 - 1) * element.max_value
        got = element.decode(element.encode(x)).double()
        nearest = (x[:, None] - grid[None, :]).abs().min(dim=1).values
        assert torch.equal((got - x).abs(), nearest)


def test_int_elements_are_symmetric_and_round_half_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 200.0, -200.0])
    assert el.INT8.decode(el.INT8.encode(x)).tolist() == [0, 2, 2, -0, -2, 127, -127]
    assert el.MXINT8.decode(el.MXINT8.encode(torch.tensor([1.99, -2.0, 1 / 128, 3 / 128]))).tolist() == [
        127 / 64, -127 / 64, 0.0, 1 / 32]


# ---- packing ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [*range(1, 17), 32])
@pytest.mark.parametrize("numel", [1, 7, 64, 1001])
def test_pack_unpack_round_trip(bits, numel):
    gen = torch.Generator().manual_seed(bits * 1000 + numel)
    codes = torch.randint(0, 1 << min(bits, 31), (numel,), generator=gen, dtype=torch.int64)
    if bits == 32:
        codes[0] = (1 << 32) - 1
    data = pack(codes, bits)
    assert data.dtype == torch.uint8 and data.numel() == packed_nbytes(numel, bits) == math.ceil(numel * bits / 8)
    assert torch.equal(unpack(data, bits, numel), codes)
    assert torch.equal(unpack(data.view(torch.int8), bits, numel), codes)


def test_packing_layout_is_lsb_first():
    assert pack(torch.tensor([0x1, 0xF, 0x3]), 4).tolist() == [0xF1, 0x03]
    # four 6-bit codes in three bytes: c0 | c1 << 6 | c2 << 12 | c3 << 18
    stream = 0b000001 | 0b111111 << 6 | 0b000010 << 12 | 0b101010 << 18
    assert pack(torch.tensor([1, 63, 2, 42]), 6).tolist() == [stream & 0xFF, stream >> 8 & 0xFF, stream >> 16]
    with pytest.raises(ValueError, match="need 2 bytes"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 4)


# ---- formats ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("shape", [(24, 96), (5, 70)])
def test_format_round_trip_through_bytes(name, shape):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen) * 0.05
    x[0, 3] = 4.0  # an outlier
    fmt = get_format(name).resolve(x)
    q = fmt.quantize(x)
    again = fmt.quantize(x)
    assert torch.equal(q.codes, again.codes) and (q.scales is None or torch.equal(q.scales, again.scales))
    data = fmt.pack(q)
    back = fmt.unpack(data, q.scales, *shape)
    direct = fmt.dequantize(q)
    assert torch.equal(fmt.dequantize(back), direct)
    scale_bytes = 0 if q.scales is None else q.scales.numel() * q.scales.element_size()
    assert data.numel() + scale_bytes == fmt.nbytes(*shape) == get_format(name).nbytes(*shape)
    assert int(q.codes.min()) >= 0 and int(q.codes.max()) < 1 << fmt.bits
    if fmt.family == "fixed":  # I is chosen from the range: no saturation, half an LSB at most
        assert float((direct - x).abs().max()) <= fmt.element.lsb / 2
    else:
        rel = float((direct - x).norm() / x.norm())
        assert rel < 0.25, f"{name}: relative error {rel}"


def test_bits_per_weight_count_the_scales():
    k = 4096
    assert get_format("int8").bits_per_weight(1, k) == 8 + 32 / k
    assert get_format("int4_g32").bits_per_weight() == 4.5
    assert get_format("int4_g64").bits_per_weight() == 4.25
    assert get_format("int4_g128").bits_per_weight() == 4.125
    for name, bits in (("mxfp8_e4m3", 8.25), ("mxfp6_e2m3", 6.25), ("mxfp4", 4.25), ("mxint8", 8.25), ("bfp4", 4.25)):
        assert get_format(name).bits_per_weight() == bits
    assert get_format("fixed8").bits_per_weight() == 8.0


def test_int8_per_channel_and_int4_group_scales():
    x = torch.tensor([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0], [-3.0, 1.0, 2.0, 0.5]])
    q = get_format("int8").quantize(x)
    assert q.scales.dtype == torch.float32 and q.scales.shape == (3, 1)
    assert q.scales[:, 0].tolist() == [float(torch.tensor(1.0) / 127), 1.0, float(torch.tensor(3.0) / 127)]
    assert el.INT8.decode(q.codes)[2].tolist() == [-127, 42, 85, 21]
    w = torch.randn(4, 200)
    q4 = get_format("int4_g64").quantize(w)
    assert q4.scales.dtype == torch.float16 and q4.scales.shape == (4, 4)  # 200 = 3 groups of 64 + 8
    assert torch.equal(q4.scales[:, -1].float(), (w[:, 192:].abs().amax(1) / 7).half().float())


# ---- MX shared-scale rules ---------------------------------------------------------------
def _mx(name, block):
    x = torch.tensor(block, dtype=torch.float32).reshape(1, -1)
    fmt = get_format(name)
    q = fmt.quantize(x)
    return q, fmt.dequantize(q)[0], fmt


def test_mx_scale_is_block_max_exponent_minus_element_emax():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, 96, generator=gen) * torch.logspace(-3, 3, 8)[:, None]
    for name, emax in (("mxfp8_e4m3", 8), ("mxfp8_e5m2", 15), ("mxfp6_e2m3", 2), ("mxfp6_e3m2", 4),
                       ("mxfp4", 2), ("mxint8", 0)):
        q = get_format(name).quantize(x)
        assert q.scales.dtype == torch.uint8 and q.scales.shape == (8, 3)
        blocks = x.reshape(8, 3, 32).abs().amax(-1)
        want = torch.floor(torch.log2(blocks.double())).to(torch.int64) - emax + 127
        assert torch.equal(q.scales.to(torch.int64), want), name


def test_mx_elements_round_then_clamp_to_element_max():
    block = [300.0, 479.0, -500.0, 1.0] + [0.0] * 28
    q, d, _ = _mx("mxfp8_e4m3", block)
    assert int(q.scales[0, 0]) == 127  # floor(log2(500)) - 8 = 0
    assert d[:4].tolist() == [288.0, 448.0, -448.0, 1.0]  # 479 and -500 saturate to +-448
    q, d, _ = _mx("mxfp4", [5.9, 1.1, 0.3] + [0.0] * 29)  # scale 2^(2-2) = 1
    assert int(q.scales[0, 0]) == 127 and d[:3].tolist() == [6.0, 1.0, 0.5]
    q, d, _ = _mx("mxfp4", [7.9] + [0.0] * 31)  # 7.9 / 2^0 saturates to 6: the spec's clamp
    assert d[0] == 6.0
    q, d, _ = _mx("mxint8", [1.999, -1.0, 0.01] + [0.0] * 29)
    assert d[:3].tolist() == [127 / 64, -1.0, 1 / 64]


def test_mx_block_of_zeros_and_exponent_range():
    q, d, _ = _mx("mxfp8_e4m3", [0.0] * 32)
    assert int(q.scales[0, 0]) == 0 and int(q.codes.abs().sum()) == 0 and d.abs().sum() == 0  # 2^-127
    q, _, _ = _mx("mxfp4", [3e38] + [0.0] * 31)
    assert int(q.scales[0, 0]) == 127 + 125  # floor(log2(3e38)) = 127, minus emax 2
    q, d, _ = _mx("mxfp8_e4m3", [2.0**-140] + [0.0] * 31)  # -140 - 8 clamps to -127
    assert int(q.scales[0, 0]) == 0 and d[0] == 0.0


def test_mx_blocks_run_along_k_with_a_short_last_block():
    x = torch.zeros(2, 40)
    x[0, 35] = 8.0  # alone in the short last block of row 0
    q = get_format("mxfp8_e4m3").quantize(x)
    assert q.scales.shape == (2, 2)
    assert q.scales.tolist() == [[0, 3 - 8 + 127], [0, 0]]


# ---- row views ---------------------------------------------------------------------------
def test_row_views_invert():
    x = torch.randn(3, 5, 7)
    for axis in range(3):
        rows = to_rows(x, axis)
        assert rows.shape == (105 // x.shape[axis], x.shape[axis]) == rows_of(tuple(x.shape), axis)
        assert torch.equal(from_rows(rows, tuple(x.shape), axis), x)


def test_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown quantization format 'int3'.*int4_g64"):
        get_format("int3")
    assert get_format("fixed<8,3,AP_RND_CONV,AP_SAT>").name == "fixed<8,3,AP_RND_CONV,AP_SAT>"
