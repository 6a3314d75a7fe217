"""The `int8_dyn` kernel (`backends/tvm/quant_vnni.py`): numbers and the instruction it uses.

Against two references on odd shapes (M = 1, 7, 33; K not a multiple of 4 or 64; N not a
multiple of 16): the kernel's own exact-integer emulation (`reference`: int64 sums, the
same float32 epilogue) at 1e-5 relative (FMA contraction of the epilogue is the only
difference), and eager fp32 `F.linear` at 3e-2 relative Frobenius error (the W8A8
rounding itself). The VNNI path is checked to contain `vpdpbusd` on a VNNI host; the
plain path (float32 FMAs on exact int8 products) is built and checked on every host.
"""

from __future__ import annotations

import functools

import pytest
import torch
import tvm

from backends.tvm import quant_vnni as qv
from backends.tvm.target import cpu_target
from ir.quant import get_format

SHAPES = [(1, 70, 40), (7, 131, 16), (33, 64, 50), (7, 3, 17)]
VNNI = qv.has_vnni()
PATHS = [pytest.param(True, marks=pytest.mark.skipif(not VNNI, reason="host CPU has no AVX-512 VNNI")), False]


@functools.cache
def built(m: int, k: int, n: int, vnni: bool, bias: bool = True, threads: int = 1):
    f = qv.int8_dyn_func(m, k, n, bias, vnni, threads=threads)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=cpu_target())


def run(m, k, n, vnni, bias=True, seed=0, threads=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 3
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if bias else torch.zeros(n)
    fmt = get_format("int8_dyn")
    q = fmt.quantize(w)
    codes = fmt.pack(q)
    _, nv = qv.tiles(m, n)
    args = [x, qv.pack(codes, n, k, nv, vnni), qv.compensation(codes, n, k, nv), q.scales.float(), b,
            torch.full((m, n), float("nan"))]
    targs = [tvm.runtime.tensor(a.numpy()) for a in args]
    built(m, k, n, vnni, bias, threads)["main"](*targs)
    y = torch.from_numpy(targs[-1].numpy())
    return x, w, b if bias else None, codes, q.scales, y


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("vnni", PATHS)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_kernel_matches_exact_integer_emulation_and_eager(m, k, n, vnni):
    x, w, b, codes, sw, y = run(m, k, n, vnni)
    want = qv.reference(x, codes, sw, b, n)
    assert not torch.isnan(y).any()
    assert rel(y, want) < 1e-5
    assert rel(y, torch.nn.functional.linear(x, w, b)) < 3e-2


@pytest.mark.parametrize("vnni", PATHS)
def test_no_bias_and_zero_rows(vnni):
    m, k, n = 7, 70, 40
    x, _, _, codes, sw, y = run(m, k, n, vnni, bias=False)
    assert rel(y, qv.reference(x, codes, sw, None, n)) < 1e-5


@pytest.mark.parametrize("vnni", PATHS)
def test_parallel_tiles_on_two_threads(vnni):
    m, k, n = 33, 131, 80  # above MIN_PARALLEL_MACS: the tile loop is parallel
    assert m * k * n >= qv.MIN_PARALLEL_MACS
    x, _, b, codes, sw, y = run(m, k, n, vnni, threads=2)
    assert rel(y, qv.reference(x, codes, sw, b, n)) < 1e-5


def test_reference_is_the_int8_dyn_emulation():
    """The exact-integer reference equals linear(fake_x, fake_w) up to float32 summation."""
    x, w, b, codes, sw, _ = run(7, 131, 40, False)
    fmt = get_format("int8")
    fake_x = fmt.fake_quantize(x)
    fake_w = get_format("int8_dyn").fake_quantize(w)
    want = torch.nn.functional.linear(fake_x, fake_w, b)
    assert rel(qv.reference(x, codes, sw, b, 40), want) < 1e-6


@pytest.mark.skipif(not VNNI, reason="host CPU has no AVX-512 VNNI: the plain int32 path is used")
def test_vnni_path_emits_vpdpbusd():
    asm = built(7, 131, 16, True).mod.inspect_source("asm")
    assert "vpdpbusd" in asm


def test_plain_path_has_no_vnni_instruction():
    asm = built(7, 131, 16, False).mod.inspect_source("asm")
    assert "vpdpbusd" not in asm


def test_packing_layout():
    """Byte l*4 + b of (vector v, k4) holds W[v*16 + l, k4*4 + b]; padding is zero."""
    n, k = 20, 6
    w = torch.arange(n * k, dtype=torch.int64).reshape(n, k) % 100
    packed = qv.pack_vnni(w.to(torch.int8).view(torch.uint8).reshape(-1), n, k, nv=2)
    assert packed.shape == (2, 2, 64)
    assert int(packed[1, 1, 3 * 4 + 1]) == int(w[19, 5])
    assert int(packed[0, 0, 5 * 4 + 2]) == int(w[5, 2])
    assert int(packed[1, 1, 4 * 4 + 0]) == 0  # n = 20 is padding
    assert int(packed[0, 1, 0 * 4 + 2]) == 0  # k = 6 is padding
    rows = qv.pack_rows(w.to(torch.int8).view(torch.uint8).reshape(-1), n, k, nv=2)
    assert rows.shape == (2, 8, 16) and int(rows[1, 5, 3]) == int(w[19, 5]) and int(rows[1, 6, 3]) == 0


def test_vnni_is_read_from_the_target():
    assert qv.has_vnni(cpu_target("znver4")) and qv.has_vnni(cpu_target("icelake-server"))
    assert not qv.has_vnni(cpu_target("znver1")) and not qv.has_vnni(cpu_target("haswell"))
