"""The emulation's building blocks (backends/hls/emulate.py) on their own.

`convert` must agree with `FixedPoint.to_integer` (ir/quant/fixed.py) for every rounding
and overflow mode, and stay exact past float64's 53 bits; a dense layer with an
accumulator too narrow for its sums must wrap in the emulation exactly as in the C++.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hls_harness import CACHE, NEEDS_TOOLS

from backends.hls import csim, emulate, project
from backends.hls import layers as L
from backends.hls.config import HLSConfig
from ir.quant.fixed import O_MODES, Q_MODES, FixedPoint

TYPES = [(8, 3, True), (16, 6, True), (5, -2, True), (12, 12, True), (8, 2, False)]

pytestmark = NEEDS_TOOLS


@pytest.mark.parametrize("q_mode,o_mode", list(itertools.product(Q_MODES, O_MODES)))
def test_convert_agrees_with_fixed_point(q_mode: str, o_mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    for width, int_bits, signed in TYPES:
        if o_mode == "AP_SAT_SYM" and not signed:
            continue
        t = FixedPoint(width, int_bits, signed, q_mode, o_mode)
        for frac in (0, 3, 10, 20, 30):
            ties = torch.arange(-64, 64) * (1 << max(frac - t.frac_bits - 1, 0))
            k = torch.cat([torch.randint(-(1 << 40), 1 << 40, (2000,), generator=g), torch.arange(-64, 64), ties])
            want = t.to_integer(torch.ldexp(k.double(), torch.tensor(float(-frac))))
            assert torch.equal(emulate.convert(k, frac, t), want), (t, frac)


def test_convert_is_exact_past_53_bits() -> None:
    t = FixedPoint(16, 6, True, "AP_RND_CONV", "AP_WRAP")
    k = torch.tensor([(1 << 60) + (1 << 39) + 1, (1 << 60) + (1 << 39), -(1 << 61) - (3 << 38)])
    # 44 fractional bits -> 10: the kept bits are k >> 34, wrapped to 16 bits, rounded on bit 33 and below
    q = [(int(v) >> 34) for v in k]
    rem = [int(v) - (qq << 34) for v, qq in zip(k, q)]
    want = []
    for qq, r in zip(q, rem):
        up = r > (1 << 33) or (r == (1 << 33) and qq % 2 == 1)
        v = (qq + up) & 0xFFFF
        want.append(v - (1 << 16) if v >= 1 << 15 else v)
    assert emulate.convert(k, 44, t).tolist() == want


def test_a_narrow_accumulator_wraps_like_the_cpp() -> None:
    g = torch.Generator().manual_seed(3)
    x_t, w_t = FixedPoint.parse("fixed<10,4>"), FixedPoint.parse("fixed<8,1,AP_RND_CONV,AP_SAT>")
    acc = FixedPoint(17, 4)  # 13 fractional bits hold every product exactly; 4 integer bits wrap
    out_t = FixedPoint.parse("fixed<9,4,AP_RND_INF,AP_SAT_SYM>")
    weight = L.Const("l0_w", w_t.to_integer(torch.rand(6, 16, generator=g) * 2 - 1), w_t)
    bias = L.Const("l0_b", x_t.to_integer(torch.randn(6, generator=g)), x_t)
    x = L.Tensor("in0", (3, 16), x_t)
    layer = L.Dense("l0", "test", [x], L.Tensor("l0_out", (3, 6), out_t), weight=weight, bias=bias, acc=acc, reuse=4)
    graph = L.HLSGraph([x], [layer.output], [layer], batch=5)
    inputs = [torch.randn(5, 3, 16, generator=g) * 6]
    want = emulate.run(graph, inputs)
    exact = L.Dense("l0", "test", [x], layer.output, weight=weight, bias=bias, acc=FixedPoint(30, 17), reuse=4)
    assert not torch.equal(want[0], emulate.run(L.HLSGraph([x], [exact.output], [exact], 5), inputs)[0])  # it wrapped
    config = HLSConfig()
    proj = project.generate(graph, config, csim.ap_types_dir(), inputs, want)
    path, _ = csim.build_library(proj, csim.ap_types_dir(), CACHE)
    got = csim.Library(path, [48], [18]).run(inputs)
    assert torch.equal(got[0], want[0].reshape(5, -1))
