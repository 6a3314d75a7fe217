"""`fixed<W,I>`: ap_fixed quantization and overflow modes against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from ir.quant import FixedPoint, get_format

LSB = 1 / 32  # fixed<8,3>: 5 fraction bits, range [-4, 4 - 1/32]


def q(spec: str, x: float) -> float:
    return float(FixedPoint.parse(spec).quantize(torch.tensor([x], dtype=torch.float64))[0])


@pytest.mark.parametrize(("spec", "x", "want"), [
    # AP_TRN (floor) with AP_WRAP, the ap_fixed defaults
    ("fixed<8,3>", 1.3, 41 * LSB),  # 41.6 LSBs -> 41
    ("fixed<8,3>", -1.3, -42 * LSB),  # -41.6 -> -42 (floor, not toward zero)
    ("fixed<8,3>", 1.5 * LSB, 1 * LSB),
    ("fixed<8,3>", 5.0, -3.0),  # 160 LSBs wraps to 160 - 256 = -96
    ("fixed<8,3>", -4 - LSB, 4 - LSB),  # -129 wraps to 127
    ("fixed<16,6>", 3.14159265, 3216 / 1024),  # floor(3216.99)
    ("fixed<4,4>", 9.0, -7.0),  # integers in [-8, 7]: 9 wraps to -7
    # AP_RND_CONV: nearest, ties to even
    ("fixed<8,3,AP_RND_CONV>", 1.3, 42 * LSB),
    ("fixed<8,3,AP_RND_CONV>", 1.5 * LSB, 2 * LSB),
    ("fixed<8,3,AP_RND_CONV>", 2.5 * LSB, 2 * LSB),
    ("fixed<8,3,AP_RND_CONV>", -1.5 * LSB, -2 * LSB),
    ("fixed<8,3,AP_RND_CONV>", -2.5 * LSB, -2 * LSB),
    ("fixed<8,3,AP_RND_CONV>", 4 - 0.4 * LSB, -4.0),  # rounds up to 128 LSBs, then wraps
    # AP_SAT: clamp to [min, max]
    ("fixed<8,3,AP_TRN,AP_SAT>", 5.0, 4 - LSB),
    ("fixed<8,3,AP_TRN,AP_SAT>", -5.0, -4.0),
    ("fixed<8,3,AP_RND_CONV,AP_SAT>", 4 - 0.4 * LSB, 4 - LSB),
    ("fixed<8,3,AP_RND_CONV,AP_SAT>", -1.3, -42 * LSB),
    # the other modes
    ("fixed<8,3,AP_RND>", 2.5 * LSB, 3 * LSB),
    ("fixed<8,3,AP_RND>", -2.5 * LSB, -2 * LSB),
    ("fixed<8,3,AP_RND_ZERO>", 2.5 * LSB, 2 * LSB),
    ("fixed<8,3,AP_RND_ZERO>", -2.5 * LSB, -2 * LSB),
    ("fixed<8,3,AP_RND_INF>", -2.5 * LSB, -3 * LSB),
    ("fixed<8,3,AP_RND_MIN_INF>", 2.5 * LSB, 2 * LSB),
    ("fixed<8,3,AP_RND_MIN_INF>", -2.5 * LSB, -3 * LSB),
    ("fixed<8,3,AP_TRN_ZERO>", -1.6 * LSB, -1 * LSB),
    ("fixed<8,3,AP_TRN,AP_SAT_ZERO>", 5.0, 0.0),
    ("fixed<8,3,AP_TRN,AP_SAT_SYM>", -5.0, -(4 - LSB)),
    ("ufixed<8,4,AP_TRN,AP_SAT>", -1.0, 0.0),
    ("ufixed<8,4>", -1.0, 15.0),  # -16 LSBs wraps to 240
])
def test_fixed_point_matches_hand_computed_values(spec, x, want):
    assert q(spec, x) == want


def test_codes_are_twos_complement_patterns():
    t = FixedPoint.parse("fixed<8,3>")
    codes = t.encode(torch.tensor([-1.3125, 3.96875, -4.0, 0.0]))
    assert codes.tolist() == [256 - 42, 127, 128, 0]
    assert t.decode(codes).tolist() == [-1.3125, 3.96875, -4.0, 0.0]


def test_names_and_cpp_types():
    t = FixedPoint.parse("fixed<16, 6>")
    assert (t.name, t.cpp_type) == ("fixed<16,6>", "ap_fixed<16,6,AP_TRN,AP_WRAP>")
    t = FixedPoint.parse("fixed<8,3,AP_RND_CONV,AP_SAT>")
    assert FixedPoint.parse(t.name) == t and t.cpp_type == "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"
    assert FixedPoint.parse("ufixed<8,0>").cpp_type == "ap_ufixed<8,0,AP_TRN,AP_WRAP>"
    for bad in ("fixed<8>", "fixed<8,3,AP_ROUND>", "fixed<0,0>"):
        with pytest.raises(ValueError):
            FixedPoint.parse(bad)


def test_auto_fixed_family_picks_integer_bits_from_the_range():
    x = torch.tensor([[0.3, -0.9, 0.01]])
    fmt = get_format("fixed8").resolve(x)
    assert fmt.name == "fixed<8,1,AP_RND_CONV,AP_SAT>"  # |x| < 1: sign bit only
    assert get_format("fixed8").resolve(torch.tensor([[5.0]])).name == "fixed<8,4,AP_RND_CONV,AP_SAT>"
    assert get_format("fixed8").resolve(torch.tensor([[0.05]])).name == "fixed<8,-3,AP_RND_CONV,AP_SAT>"
    assert torch.equal(fmt.dequantize(fmt.quantize(x)), FixedPoint.parse(fmt.name).quantize(x).float())
