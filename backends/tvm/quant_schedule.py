"""CPU schedules of the fused quantized matmul (`quant_matmul.py`): two micro-kernels.

Both walk tiles of NT weight rows (the parallel loop, with the weight batch) and decode
each tile once into a buffer that stays in L1/L2 while every activation row runs against
it. They differ in which axis the vector lanes take, which decides where a transpose is
paid. Measured on the zoo's shapes, one thread, against the fp32 MKL GEMM (~90 GFLOP/s):

- `quant_outer` (the BLIS micro-kernel): lanes along the output channels n. The tile is
  decoded transposed, Wt[k, n], so per k an MT x NT block of outputs takes MT broadcasts of
  A, NT/16 vector loads of Wt and MT * NT/16 FMAs into registers, with no reduction at the
  end. int8 at M=64: 180 GFLOP/s (2x MKL); int4: 150; MXFP4: 100. The transposed decode
  gathers codes across rows, which costs little per FMA when many rows share the tile
  but dominates at M=8 (int4 64 us vs MKL 46 us at 8x256x704).
- `quant_inner` (rfactor dot products): lanes along k, so the decode reads codes
  contiguously; an MT x NT block accumulates one 16-lane vector per output and sums the
  lanes at the end (16 adds per output, noticeable at K=256). Better for few rows:
  8x256x704 int8 28 us, int4 34 us (MKL 43 us); at M=64 only ~75-125 GFLOP/s.

So row tiles of at least `OUTER_MIN_ROWS` rows take the outer kernel.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx

from backends.tvm.loop_steps import own_loops
from backends.tvm.quant_decode import PackedLayout

# Below this many multiply-adds a kernel stays serial: a fork/join on TVM's pool costs a
# few microseconds, about what 300k multiply-adds take on one core.
MIN_PARALLEL_MACS = 1 << 18
OUTER_MIN_ROWS = 16


def _divisor(n: int, choices: tuple[int, ...]) -> int:
    return next((c for c in choices if n % c == 0), 1)


def _powers(lanes: int) -> tuple[int, ...]:
    return tuple(lanes >> i for i in range(lanes.bit_length()))


def schedule(
    func: tirx.PrimFunc, shape, layout: PackedLayout, lanes: int, threads: int
) -> tuple[tirx.PrimFunc, str]:
    """(scheduled func, rule name). `func` computes C (the sums), W (the decode) and D."""
    rows = math.prod(shape.out_shape[shape.batch_dims : -1])
    m = shape.out_shape[-2]
    outer = rows >= OUTER_MIN_ROWS and m % 4 == 0 and shape.n % lanes == 0
    sch = s_tir.Schedule(func)
    if outer:
        mt, nt = _divisor(m, (8, 4)), _divisor(shape.n, (2 * lanes, lanes))
    else:
        mt, nt = _divisor(m, (4, 3, 2, 1)), _divisor(shape.n, (4, 2, 1))
    rf = None if outer else _rfactor(sch, shape, lanes)
    tiles, m_out = _tile(sch, shape, mt, nt)
    if threads > 1 and shape.macs >= MIN_PARALLEL_MACS:
        sch.parallel(tiles)  # before decompose_reduction, which `parallel` then refuses
    if outer:
        _outer(sch, tiles, layout, lanes, nt)
    else:
        _inner(sch, rf, tiles, m_out, layout, lanes)
    return sch.mod["main"], "quant_outer" if outer else "quant_inner"


def _tile(sch: s_tir.Schedule, shape, mt: int, nt: int):
    """Tile D: weight batch (fused) > weight-row tiles > other rows > row tiles > block.

    Only the last row dim is tiled, so a row tile never straddles the outer dims. The sums
    C go to registers under the row tile. Returns the fused (batch, weight-row tile) loop
    and the row-tile loop.
    """
    d, c = sch.get_sblock("D"), sch.get_sblock("C")
    *lead, n = sch.get_loops(d)
    b = sch.fuse(*lead[: shape.batch_dims]) if shape.batch_dims else sch.add_unit_loop(lead[0])
    *mid, m = lead[shape.batch_dims :]
    n_out, n_in = sch.split(n, [None, nt])
    m_out, m_in = sch.split(m, [None, mt])
    sch.reorder(b, n_out, *mid, m_out, m_in, n_in)
    sch.compute_at(c, m_out, preserve_unit_loops=True)
    sch.set_scope(c, 0, "local")
    return sch.fuse(b, n_out), m_out


def _block(sch: s_tir.Schedule, name: str):
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - TVM raises a plain error for an unknown block name
        return None


def _loops_writing(sch: s_tir.Schedule, block, dims: int) -> tuple[list, object | None]:
    """The loops driving the last `dims` indices of the block's write, and its k loop."""
    pairs = own_loops(sch, block, len(sch.get_loops(block)) - len(sch.get(block).iter_vars))
    written = list(sch.get(block).body.indices)[-dims:]
    loops = [next(lp for iv, lp in pairs if iv.var.same_as(v)) for v in written]
    k = next((lp for iv, lp in pairs if iv.iter_type == tirx.IterVar.CommReduce), None)
    return loops, k


def _outer(sch: s_tir.Schedule, tiles, layout: PackedLayout, lanes: int, nt: int) -> None:
    c, d = sch.get_sblock("C"), sch.get_sblock("D")
    (mi, ni), k = _loops_writing(sch, c, 2)
    sch.reorder(k, mi, ni)
    vl = min(lanes, nt)
    nv, nl = sch.split(ni, [None, vl])
    sch.unroll(mi)
    sch.unroll(nv)
    sch.vectorize(nl)
    sch.decompose_reduction(c, k)
    (_, dn), _ = _loops_writing(sch, d, 2)
    sch.vectorize(sch.split(dn, [None, vl])[1])
    # Decode the tile transposed, Wt[word, slot, row], rows in the lanes.
    w = sch.get_sblock("W")
    sch.transform_layout(w, ("write", 0), lambda r, word, slot: (word, slot, r))
    sch.compute_at(w, tiles, preserve_unit_loops=True)
    r, word, slot = sch.get_loops(w)[-3:]
    sch.reorder(word, slot, r)
    sch.unroll(slot)
    sch.vectorize(sch.split(r, [None, vl])[1])
    scales = _block(sch, "S")
    if scales is not None:  # converted once per tile, laid out [group, row] for the lanes
        sch.transform_layout(scales, ("write", 0), lambda r, g: (g, r))
        sch.compute_at(scales, tiles, preserve_unit_loops=True)
        r, g = sch.get_loops(scales)[-2:]
        sch.reorder(g, r)


def _rfactor(sch: s_tir.Schedule, shape, lanes: int):
    """Split k into vector lanes and sum each lane separately: C_rf[*out, lane]."""
    c = sch.get_sblock("C")
    *_, k = sch.get_loops(c)
    _, k_lane = sch.split(k, [None, _divisor(shape.k, _powers(lanes))])
    rf = sch.rfactor(k_lane, len(shape.out_shape))
    sch.set_scope(rf, 0, "local")
    return rf


def _inner(sch: s_tir.Schedule, rf, tiles, m_out, layout: PackedLayout, lanes: int) -> None:
    sch.compute_at(rf, m_out, preserve_unit_loops=True)
    (mi, ni, lane), ko = _loops_writing(sch, rf, 3)
    sch.reorder(ko, mi, ni, lane)
    sch.vectorize(lane)
    sch.unroll(mi)
    sch.unroll(ni)
    # Decode the tile row-major, whole words per step, words in the lanes.
    w = sch.get_sblock("W")
    sch.compute_at(w, tiles, preserve_unit_loops=True)
    *_, words, slot = sch.get_loops(w)
    extent = layout.k // layout.per_word if layout.aligned else layout.k
    _, inner = sch.split(words, [None, _divisor(extent, _powers(lanes))])
    sch.unroll(slot)
    sch.vectorize(inner)
    scales = _block(sch, "S")
    if scales is not None:
        sch.compute_at(scales, tiles, preserve_unit_loops=True)
