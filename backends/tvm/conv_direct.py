"""Direct convolution: `kiln.conv2d` as a TIR kernel over a weight packed once, at load time.

Why: the library path (`library.py`) runs every convolution as torch's oneDNN call, which
builds or looks up a primitive on every call: 50-75 us for a depthwise 3x3 on a 16x16 map
that is ~2 us of arithmetic, and oneDNN allocates its result, so the library path adds a
copy. On the real-model suite's convnets (MobileNetV2, EfficientNet, ResNet, RegNet,
ConvNeXt) that overhead is most of the model: eager MobileNetV2 spent 67% of its time in
`mkldnn_convolution` at 75 us a call (measured here, 2026-12-04, Zen 4).

Three kernels, NCHW in and out like the rest of Kiln's TVM lowering (no relayout between ops):

- `general` (groups=1, grouped, pointwise, strided): the packed-dense register tile with
  pixels as rows. W [Co, Cg, KH, KW] is packed as `Wp [Co/cb, Cg, KH, KW, cb]` (a block of
  `cb` output channels never straddles a group), so per reduction step (ci, kh, kw) a tile
  of `mt` output pixels by `cb` channels broadcasts `mt` input values, loads `cb / lanes`
  weight vectors and issues `mt * cb / lanes` FMAs. Any stride or dilation reads the same
  way (one broadcast per pixel). The tile is written back (plus bias) into NCHW.
- `pointwise` (1x1, stride 1, no padding, groups=1, a vector of pixels in whole rows): the
  vector runs along pixels, contiguous in NCHW, so the tile is written back as vectors
  (MobileNetV2's 8 -> 48 at 16x16: 14 -> 7 us).
- `depthwise` (groups = Ci = Co): no reduction over channels, so the vector runs along an
  output row instead: per (kh, kw) one row load and one broadcast weight, the padded input
  plane of one channel staged in a small buffer first.

Padding is done inside the kernel (a zero-filled staging buffer), so no pad op runs first.
`conv_plan.ConvPlan` decides for a whole program before lowering (and folds batch norms
and activations into the kernel's write-back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from tvm import s_tir, te, tirx

from backends.tvm.dense_packed import MIN_PARALLEL_MACS, OPAQUE
from backends.tvm.fast_expr import silu
from backends.tvm.schedule import SCHEDULE_ATTR

POLICIES = ("auto", "direct", "library")


@dataclass(frozen=True)
class ConvOptions:
    """Which convolutions take the direct kernel, and its threads.

    `auto` sends a convolution to the kernel when its multiply-adds are at most
    `max_macs_serial` (TVM's pool serial, as by default next to torch's spinning OpenMP
    worker, `target.default_thread_config`) or `max_macs_parallel`. Measured here (Zen 4,
    2026-12-04, a shared host), the serial kernel against oneDNN on 2 threads: 10-20x faster
    on the suite's convnets (3 us against 50 us per depthwise call), 0.35-0.7x from 38M MACs
    (oneDNN's second thread and its AVX-512 kernels), 1.4-2.4x on some 50-120M shapes; at
    4.7M (the zoo cnn's 64-channel 3x3 on 8x8) 93 us against oneDNN's 170 us on one thread,
    and the zoo cnn ran 14x faster with the kernel in an A/B under load. So the line sits at
    8M, where oneDNN's call cost stops dominating; large convolutions stay on the library.
    """

    policy: str = "auto"
    max_macs_serial: int = 1 << 23
    max_macs_parallel: int = 1 << 25
    min_lanes: int = 8
    threads: int = 2

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"conv: unknown policy {self.policy!r}; use one of {', '.join(POLICIES)}")


@dataclass(frozen=True)
class ConvShape:
    """One convolution's problem: NCHW input, OIHW weight, torch's attributes."""

    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def out_hw(self) -> tuple[int, int]:
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        return ((self.h + 2 * ph - dh * (self.kh - 1) - 1) // sh + 1,
                (self.w + 2 * pw - dw * (self.kw - 1) - 1) // sw + 1)

    @property
    def macs(self) -> int:
        oh, ow = self.out_hw
        return self.n * self.co * oh * ow * (self.ci // self.groups) * self.kh * self.kw

    @property
    def depthwise(self) -> bool:
        return self.groups == self.ci == self.co and self.groups > 1


def channel_block(co_per_group: int, lanes: int) -> int:
    """Output channels per register tile: a multiple of the vector where the group allows."""
    for cb in (2 * lanes, lanes, 8, 4, 2):
        if co_per_group % cb == 0 and cb <= co_per_group:
            return cb
    return 1


def pixel_tile(cb: int, lanes: int, out_hw: tuple[int, int]) -> int:
    """Output pixels per register tile: `mt * ceil(cb / lanes)` accumulators must leave
    registers for the broadcasts (32 zmm with AVX-512, 16 ymm with AVX2).

    A tile never straddles a row boundary unless it holds whole rows (it divides the
    output width, or is a whole number of rows that divides the plane): otherwise the
    tile's input rows are no affine function of the tile loop, and TVM 0.27 cannot
    `compute_at` the accumulator under it. A prime width gets narrow tiles, still correct.
    """
    oh, ow = out_hw
    vectors = max(1, math.ceil(cb / lanes))
    most = max(1, min(12, (24 if lanes >= 16 else 12) // vectors))
    whole_rows = [k * ow for k in range(1, oh + 1) if oh % k == 0 and k * ow <= most]
    in_row = [d for d in range(1, min(most, ow) + 1) if ow % d == 0]
    return max(whole_rows + in_row)


def pack_weight(w: torch.Tensor, shape: ConvShape, cb: int) -> torch.Tensor:
    """OIHW -> `[Co/cb, Cg, KH, KW, cb]` (general) or `[C, KH, KW]` (depthwise), contiguous."""
    if shape.depthwise:
        return w.detach().reshape(shape.co, shape.kh, shape.kw).contiguous()
    cg = shape.ci // shape.groups
    return w.detach().reshape(shape.co // cb, cb, cg, shape.kh, shape.kw).permute(0, 2, 3, 4, 1).contiguous()


def _padded(x: te.Tensor, s: ConvShape) -> te.Tensor:
    (ph, pw) = s.padding
    if ph == 0 and pw == 0:
        return x
    return te.compute(
        (s.n, s.ci, s.h + 2 * ph, s.w + 2 * pw),
        lambda n, c, i, j: tirx.if_then_else(
            tirx.all(i >= ph, i < s.h + ph, j >= pw, j < s.w + pw), x[n, c, i - ph, j - pw],
            tirx.const(0.0, "float32")),
        name="pad",
    )


# What the write-back applies last: ("clamp", lo, hi) (ReLU is ("clamp", 0.0, None), ReLU6
# ("clamp", 0.0, 6.0)), ("silu",), or None.
Activation = tuple | None


# A model repeats its convolution shapes (MobileNetV2: 52 convolutions, 27 shapes), and every
# compile of a shape-specialized graph asks again: each kernel is scheduled once per process.
@lru_cache(maxsize=512)
def conv_direct_func(
    s: ConvShape, bias: bool, lanes: int, threads: int = 2, activation: Activation = None,
    residual: bool = False,
) -> tirx.PrimFunc:
    """Scheduled PrimFunc `(x [N,Ci,H,W], Wp, [bias [Co]], [residual [N,Co,OH,OW]], out)`.

    The write-back adds the bias, then the residual (ResNet's and MobileNetV2's shortcut),
    then applies `activation` (a clamp, or SiLU through `fast_expr`)."""
    x = te.placeholder((s.n, s.ci, s.h, s.w), "float32", name="x")
    tail = Tail(
        te.placeholder((s.co,), "float32", name="bias") if bias else None,
        te.placeholder((s.n, s.co, *s.out_hw), "float32", name="residual") if residual else None,
        activation,
    )
    parallel = threads > 1 and s.macs >= MIN_PARALLEL_MACS
    if s.depthwise:
        return _depthwise(s, x, tail, lanes, parallel)
    if pointwise_rows(s, lanes) or row_vectors(s, lanes):
        return _pointwise(s, x, tail, lanes, parallel)
    return _general(s, x, tail, lanes, parallel)


@dataclass(frozen=True)
class Tail:
    """What the write-back applies after the accumulation, in this order."""

    bias: te.Tensor | None
    residual: te.Tensor | None
    activation: Activation

    @property
    def inputs(self) -> list[te.Tensor]:
        return [t for t in (self.bias, self.residual) if t is not None]

    def __call__(self, v: tirx.PrimExpr, n, co, i, j) -> tirx.PrimExpr:
        v = v + self.bias[co] if self.bias is not None else v
        v = v + self.residual[n, co, i, j] if self.residual is not None else v
        if self.activation is None:
            return v
        if self.activation[0] == "silu":
            return silu(v)
        _, lo, hi = self.activation
        v = tirx.max(v, tirx.const(lo, "float32")) if lo is not None else v
        return tirx.min(v, tirx.const(hi, "float32")) if hi is not None else v


def pointwise_rows(s: ConvShape, lanes: int) -> bool:
    """Whether the pixel-vector kernel applies: a 1x1, stride-1, unpadded, ungrouped
    convolution whose vector of `lanes` pixels is a whole number of rows or part of one."""
    plain = (s.kh, s.kw, s.stride, s.padding, s.groups) == (1, 1, (1, 1), (0, 0), 1)
    return plain and (s.w % lanes == 0 or (lanes % s.w == 0 and s.h % (lanes // s.w) == 0))


def row_vectors(s: ConvShape, lanes: int) -> bool:
    """Whether the pixel-vector kernel takes a stride-1, ungrouped convolution with taps
    (3x3, padded): a vector of `lanes` output pixels lies in one output row, so its inputs
    are one contiguous (unaligned) load per tap. The general kernel's pixels x channels tile
    writes back one scalar per output: on a 3-channel stem (27 multiply-adds per output)
    that write-back was most of its time (221 us serial for 1.8M multiply-adds, 2x3x32x32 ->
    32 channels, Zen 4)."""
    return (s.groups == 1 and s.stride == (1, 1) and (s.kh, s.kw) != (1, 1)
            and s.out_hw[1] % lanes == 0)


def _pointwise(
    s: ConvShape, x: te.Tensor, tail: Tail, lanes: int, parallel: bool
) -> tirx.PrimFunc:
    """Output channels times one vector of pixels per tile: NCHW keeps a channel's pixels
    contiguous, so each input channel (and tap) is one vector load, each weight a broadcast,
    and the tile is written back as contiguous vector stores (the general kernel's
    pixel-rows tile writes back scalars, which bound it when Ci * kh * kw is small).
    1x1 convolutions (`pointwise_rows`: a vector may span whole rows) and stride-1 ones
    with taps (`row_vectors`: a vector within a row, inputs from the padded plane).
    The weight is the general kernel's packed layout, `[Co/cb, Ci, kh, kw, cb]`; a tile
    holds at most one vector's worth of channels (`tile`), so its accumulators fit."""
    cb = channel_block(s.co, lanes)
    tile = min(cb, lanes)
    oh, ow = s.out_hw
    pixels = oh * ow
    dh, dw = s.dilation
    xp = _padded(x, s)
    wp = te.placeholder((s.co // cb, s.ci, s.kh, s.kw, cb), "float32", name="w_packed")
    rc, rh, rw = te.reduce_axis((0, s.ci), "ci"), te.reduce_axis((0, s.kh), "kh"), te.reduce_axis((0, s.kw), "kw")
    acc = te.compute((s.n, s.co, pixels), lambda n, co, p: te.sum(
        xp[n, rc, p // ow + rh * dh, p % ow + rw * dw] * wp[co // cb, rc, rh, rw, co % cb], axis=[rc, rh, rw]),
        name="acc")
    out = te.compute((s.n, s.co, oh, ow),
                     lambda n, co, i, j: tail(acc[n, co, i * ow + j], n, co, i, j), name="out")
    sch = s_tir.Schedule(te.create_prim_func([x, wp, *tail.inputs, out]))
    acc_b = sch.get_sblock("acc")
    n, co, i, j = sch.get_loops(sch.get_sblock("out"))
    blk, jj = sch.split(co, [None, tile])
    po, pi = sch.split(sch.fuse(i, j), [None, lanes])
    sch.reorder(n, blk, po, jj, pi)
    sch.compute_at(acc_b, po, preserve_unit_loops=True)
    sch.set_scope(acc_b, 0, "local")
    *_, aj, ap, ar, arh, arw = sch.get_loops(acc_b)
    sch.reorder(ar, arh, arw, aj, ap)
    sch.vectorize(ap)
    sch.unroll(aj)
    sch.unroll(arw)
    sch.vectorize(pi)
    outer = sch.fuse(n, blk, po)  # pixel vectors too: a few output channels still split well
    if xp is not x:  # staged once per call
        _vectorize_pad(sch, s, lanes)
    return _finish(sch, outer, parallel, "conv_pointwise" if (s.kh, s.kw) == (1, 1) else "conv_rows")


def _vectorize_pad(sch: s_tir.Schedule, s: ConvShape, lanes: int) -> None:
    """The padded plane's rows as vectors when a row fits in four of them (a wider row is
    left to LLVM's own loop vectorizer)."""
    if s.w + 2 * s.padding[1] <= 4 * lanes:
        sch.vectorize(sch.get_loops(sch.get_sblock("pad"))[-1])


def _finish(sch: s_tir.Schedule, outer, parallel: bool, rule: str) -> tirx.PrimFunc:
    """The kernels' common end: the outer loop on TVM's pool when the work pays for the
    fork, the rule's name for reports, and opaque so that FuseOps never merges it."""
    if parallel:
        sch.parallel(outer)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, rule).with_attr("op_pattern", OPAQUE)


def _general(
    s: ConvShape, x: te.Tensor, tail: Tail, lanes: int, parallel: bool
) -> tirx.PrimFunc:
    cg, cog = s.ci // s.groups, s.co // s.groups
    cb = channel_block(cog, lanes)
    oh, ow = s.out_hw
    pixels = oh * ow
    mt = pixel_tile(cb, lanes, (oh, ow))
    (sh, sw), (dh, dw) = s.stride, s.dilation
    wp = te.placeholder((s.co // cb, cg, s.kh, s.kw, cb), "float32", name="w_packed")
    xp = _padded(x, s)
    rc, rh, rw = te.reduce_axis((0, cg), "ci"), te.reduce_axis((0, s.kh), "kh"), te.reduce_axis((0, s.kw), "kw")

    def acc_at(n, blk, p, j):
        group = blk * cb // cog
        return te.sum(
            xp[n, group * cg + rc, (p // ow) * sh + rh * dh, (p % ow) * sw + rw * dw] * wp[blk, rc, rh, rw, j],
            axis=[rc, rh, rw],
        )

    acc = te.compute((s.n, s.co // cb, pixels, cb), acc_at, name="acc")

    def out_at(n, co, i, j):
        return tail(acc[n, co // cb, i * ow + j, co % cb], n, co, i, j)

    out = te.compute((s.n, s.co, oh, ow), out_at, name="out")
    func = te.create_prim_func([x, wp, *tail.inputs, out])
    sch = s_tir.Schedule(func)
    acc_b, out_b = sch.get_sblock("acc"), sch.get_sblock("out")
    n, co, i, j = sch.get_loops(out_b)
    blk, jj = sch.split(co, [None, cb])
    q = sch.fuse(i, j)
    qo, qi = sch.split(q, [None, mt])
    sch.reorder(n, blk, qo, jj, qi)
    sch.compute_at(acc_b, qo, preserve_unit_loops=True)
    sch.set_scope(acc_b, 0, "local")
    *_, aq, aj, arc, arh, arw = sch.get_loops(acc_b)
    sch.reorder(arc, arh, arw, aq, aj)
    sch.vectorize(aj)
    sch.unroll(aq)
    sch.unroll(arw)
    outer = sch.fuse(n, blk)
    if xp is not x:  # staged once per call
        _vectorize_pad(sch, s, lanes)
    return _finish(sch, outer, parallel, "conv_direct")


def _depthwise(
    s: ConvShape, x: te.Tensor, tail: Tail, lanes: int, parallel: bool
) -> tirx.PrimFunc:
    oh, ow = s.out_hw
    (sh, sw), (dh, dw) = s.stride, s.dilation
    w = te.placeholder((s.co, s.kh, s.kw), "float32", name="w")
    xp = _padded(x, s)
    rh, rw = te.reduce_axis((0, s.kh), "kh"), te.reduce_axis((0, s.kw), "kw")
    acc = te.compute(
        (s.n, s.co, oh, ow),
        lambda n, c, i, j: te.sum(xp[n, c, i * sh + rh * dh, j * sw + rw * dw] * w[c, rh, rw], axis=[rh, rw]),
        name="acc",
    )
    out = te.compute((s.n, s.co, oh, ow), lambda n, c, i, j: tail(acc[n, c, i, j], n, c, i, j), name="out")
    func = te.create_prim_func([x, w, *tail.inputs, out])
    sch = s_tir.Schedule(func)
    acc_b, out_b = sch.get_sblock("acc"), sch.get_sblock("out")
    n, c, i, j = sch.get_loops(out_b)
    sch.compute_at(acc_b, i, preserve_unit_loops=True)
    sch.set_scope(acc_b, 0, "local")
    *_, aj, arh, arw = sch.get_loops(acc_b)
    sch.reorder(arh, arw, aj)
    vector = ow <= 4 * lanes
    if vector:
        sch.vectorize(aj)
        sch.vectorize(j)
    sch.unroll(arw)
    sch.unroll(arh)
    if xp is not x:  # one channel's padded plane, staged per channel (it stays in L1)
        pad = sch.get_sblock("pad")
        sch.compute_at(pad, c)
        _vectorize_pad(sch, s, lanes)
    outer = sch.fuse(n, c)
    return _finish(sch, outer, parallel, "conv_depthwise")


def use_direct(shape: ConvShape, options: ConvOptions, lanes: int) -> bool:
    """The rule: `direct`/`library` force it; `auto` takes every convolution up to the
    multiply-adds `ConvOptions` allows for its threads, on a host with AVX2 or wider."""
    if options.policy != "auto":
        return options.policy == "direct"
    most = options.max_macs_parallel if options.threads > 1 else options.max_macs_serial
    return lanes >= options.min_lanes and shape.macs <= most
