"""Packed dense: `y = x @ W^T + b` as a TIR kernel over a weight packed once, at load time.

Why: the library path (`library.py`) runs every linear as torch's MKL sgemm, whose AMD code
path is AVX2: F.linear 8x256 -> 512 takes ~26 us on 2 threads (~80 GFLOP/s, the 512 KB
weight read at ~20 GB/s), and one core sustains ~88 GFLOP/s at any size. For few rows a
linear is bound by reading W, which this kernel does once, as contiguous AVX-512 vectors;
for many rows its register tile runs ~200 GFLOP/s per core (NOTES.md).

Layout: W [N, K] is packed at load time into `Wp [ceil(N/nb), K, nb]` (zero rows pad the
last block), so the `nb` outputs of one block take one or more whole vectors of weights
per k, read in order. The kernel is the classic register-blocked outer product: an
`mt x nb` tile of outputs sits in `mt * nb / 16` zmm registers; per k it broadcasts `mt`
activations, loads `nb / 16` weight vectors and issues `mt * nb / 16` FMAs. k is unrolled
by `ku`. The bias is added while the tile is written back. Blocks of N times tiles of
rows are the parallel loop on TVM's pool.

The choice between this kernel and the library is made per linear by `use_packed`, from
the measurements in NOTES.md ("Packed dense"). `DensePlan` makes it for a whole program
before lowering: it decides which parameters are bound packed (`Lowered.derived`) and
which original weights the executable no longer needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tvm import relax, s_tir, te, tirx

from backends.tvm.groups import alone, group_sizes
from backends.tvm.schedule import SCHEDULE_ATTR
from backends.tvm.target import host_cpu, host_lanes
from ir import dtypes
from ir.core import KilnOp
from ir.ops.contraction import LinearOp, MatmulOp
from ir.ops.sources import ParamOp

OPAQUE = 8  # relax OpPatternKind.kOpaque: FuseOps must never merge this kernel into another
# Below this many multiply-adds the kernel stays serial: a fork/join on TVM's pool costs a
# few microseconds, about what 300k multiply-adds take on one core.
MIN_PARALLEL_MACS = 1 << 18
POLICIES = ("auto", "packed", "library")


@dataclass(frozen=True)
class DenseOptions:
    """Which linears take the packed kernel, and its threads.

    `policy`: `auto` applies the measured rule (`use_packed`), `packed` sends every
    eligible linear to the kernel, `library` none (torch's GEMM, as before this file).
    The bounds of `auto` are the envelope the kernel was measured in (NOTES.md).
    """

    policy: str = "auto"
    min_lanes: int = 8  # auto: AVX2 (8 floats per vector) or wider
    max_rows: int = 4096  # auto, AMD with AVX-512 (BLAS runs its AVX2 code there): rows at most
    max_rows_avx2: int = 128  # auto, AMD with AVX2 only (measured on Zen 1): rows at most
    max_rows_other: int = 32  # auto, other CPUs (unmeasured): the weight-bound regime
    max_weight_bytes: int = 256 << 20  # auto: packed weight at most this big
    threads: int = 2  # TVM's pool: the kernel's parallel loop
    library_threads: int = 2  # torch's pool: the GEMM the kernel is judged against
    # Tuned tiles by fusion group, (group, tiles) pairs (`dense_knobs.py`; `kiln tune`).
    tuned: tuple[tuple[int, DenseTiles], ...] = ()

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(
                f"dense: unknown policy {self.policy!r}; use one of {', '.join(POLICIES)}"
            )


@dataclass(frozen=True)
class DenseTiles:
    nb: int  # outputs per weight block: the vectorized axis (two vectors, one for tiny N)
    mt: int  # rows per register tile
    ku: int = 8  # k unroll


def block_width(n: int, lanes: int = 16) -> int:
    """Two vectors of outputs per block (32 floats with AVX-512); one for N <= one vector,
    where two would be mostly padding."""
    return lanes if n <= lanes else 2 * lanes


def choose_tiles(length: int, n: int, lanes: int = 16) -> DenseTiles:
    """Register tile: `mt` rows x two vectors, `2 * mt` accumulators, at most 16 of 32 zmm
    (12 of 16 ymm without AVX-512). `length` is the tiled lead dim: `mt` is the size in
    4..8 that pads it least (the largest on a tie), or `length` itself below 4."""
    top = 8 if lanes >= 16 else 6
    if length <= top:
        return DenseTiles(block_width(n, lanes), length)
    mt = min(range(top, 3, -1), key=lambda t: math.ceil(length / t) * t)
    return DenseTiles(block_width(n, lanes), mt)


def tiled_length(lead: tuple[int, ...]) -> int:
    """The lead dim row tiles run along: the last one larger than 1."""
    return next((d for d in reversed(lead) if d > 1), 1)


def use_packed(
    m: int, k: int, n: int, options: DenseOptions, lanes: int = 16, cpu: str = "znver5"
) -> bool:
    """The rule (NOTES.md, "Packed dense"). On AMD with AVX-512 (`cpu` is LLVM's name,
    `znver*`), where torch's BLAS runs AVX2 code, the kernel won every measured shape, so
    every linear within the measured envelope (`max_rows`, `max_weight_bytes`) takes it.
    On AMD with AVX2 only (Zen 1 measured) it wins up to 128 rows and loses from 512
    (`max_rows_avx2`). On other CPUs BLAS has kernels tuned for them: only few rows
    (`max_rows_other`), where a linear is bound by reading W and the packed layout plus
    no library hop is what wins. Narrower than AVX2: the library.
    """
    if options.policy != "auto":
        return options.policy == "packed"
    nb = block_width(n, lanes)
    if not cpu.startswith("znver"):
        rows = options.max_rows_other
    else:
        rows = options.max_rows if lanes >= 16 else options.max_rows_avx2
    if options.threads < options.library_threads and lanes < 16:
        # A serial kernel against torch's GEMM on all cores (`default_thread_config`): on
        # AVX2 only the weight-bound few rows still win (Zen 1, one benchmark run: mlp's 8-row
        # linears 1.6x; encoder's 128-row and gpt's 64-row ones lost, 26 vs 17 ms and 31 vs
        # 23 ms per model).
        rows = min(rows, options.max_rows_other)
    weight = 4 * k * nb * math.ceil(n / nb)
    return lanes >= options.min_lanes and m <= rows and weight <= options.max_weight_bytes


def pack_weight(w: torch.Tensor, nb: int) -> torch.Tensor:
    """[N, K] -> [ceil(N/nb), K, nb], zero-padded: block j holds rows j*nb .. j*nb+nb-1."""
    n, k = w.shape
    blocks = math.ceil(n / nb)
    if blocks * nb != n:  # one copy when N is a multiple of nb (the load-time cost of a warm compile)
        w = torch.nn.functional.pad(w, (0, 0, 0, blocks * nb - n))
    if w.dtype == torch.float32 and w.device.type == "cpu":
        # numpy's copy is serial: torch's parallel strided copy took 10x longer (220 vs 20 ms
        # for gpt's weights) on a loaded 2-core host, its OpenMP workers waiting on each other.
        # The buffer is torch's (64-byte aligned, as TVM's kernels assume; numpy's is not).
        packed = torch.empty(blocks, k, nb, dtype=w.dtype)
        np.copyto(packed.numpy(), w.detach().reshape(blocks, nb, k).numpy().transpose(0, 2, 1))
        return packed
    return w.reshape(blocks, nb, k).transpose(1, 2).contiguous()


# ---- the kernel --------------------------------------------------------------------------
def dense_packed_func(
    lead: tuple[int, ...],
    k: int,
    n: int,
    tiles: DenseTiles,
    bias: bool,
    threads: int = 2,
) -> tirx.PrimFunc:
    """Scheduled PrimFunc `(x [*lead, K], Wp [N/nb, K, nb], [bias [N]], out [*lead, N])`.

    Row tiles run along the last lead dim larger than 1 (`L`), so a tile never straddles
    the outer dims. The accumulator covers whole tiles, `ceil(L/mt) * mt` rows by
    `ceil(N/nb) * nb` columns: a ragged last tile re-reads row L-1 (a clamp per row,
    hoisted out of the k loop) and the write-back drops what lies outside `out`. Padded
    weight columns are zeros.
    """
    nb = tiles.nb
    keep = [p for p, d in enumerate(lead) if d > 1] or [len(lead) - 1]  # unit dims index 0
    length = lead[keep[-1]]
    rows, blocks = math.ceil(length / tiles.mt) * tiles.mt, math.ceil(n / nb)
    x = te.placeholder((*lead, k), "float32", name="x")
    wp = te.placeholder((blocks, k, nb), "float32", name="w_packed")
    r = te.reduce_axis((0, k), name="k")

    def x_at(*i):
        idx = dict(zip(keep, i))
        idx[keep[-1]] = tirx.min(i[-1], length - 1) if rows > length else i[-1]
        return x[(*(idx.get(p, 0) for p in range(len(lead))), r)]

    acc = te.compute(
        (*(lead[p] for p in keep[:-1]), rows, blocks * nb),
        lambda *i: te.sum(x_at(*i[:-1]) * wp[i[-1] // nb, r, i[-1] % nb], axis=r),
        name="acc",
    )
    args = [x, wp]
    b = te.placeholder((n,), "float32", name="bias") if bias else None
    args += [b] if bias else []

    def out_at(*i):
        v = acc[(*(i[p] for p in keep), i[-1])]
        return v + b[i[-1]] if b is not None else v

    out = te.compute((*lead, n), out_at, name="out")
    func = te.create_prim_func([*args, out])
    macs = math.prod(lead) // length * rows * k * blocks * nb
    return schedule_dense(func, tiles, keep[-1], threads if macs >= MIN_PARALLEL_MACS else 1)


def schedule_dense(func: tirx.PrimFunc, tiles: DenseTiles, tiled: int, threads: int) -> tirx.PrimFunc:
    """The register tile over blocks `acc` (accumulator) and `out` (write-back); `tiled` is
    the output's lead loop that row tiles run along. Shared with `dense_batched.py`."""
    sch = s_tir.Schedule(func)
    acc, out = sch.get_sblock("acc"), sch.get_sblock("out")
    *lead, col = sch.get_loops(out)
    n_out, n_in = sch.split(col, [None, tiles.nb])
    m_out, m_in = sch.split(lead[tiled], [None, tiles.mt])
    others = lead[:tiled] + lead[tiled + 1 :]
    # A weight block (K x nb, in L1/L2) is reused by every row tile before the next one.
    sch.reorder(n_out, *others, m_out, m_in, n_in)
    # The accumulator tile lives in registers: computed under (block, row tile), then
    # written back (plus bias) by the `out` loops below.
    sch.compute_at(acc, m_out, preserve_unit_loops=True)
    sch.set_scope(acc, 0, "local")
    *_, am, an, ak = sch.get_loops(acc)
    ku = next(u for u in (tiles.ku, 4, 2, 1) if int(sch.get(ak).extent) % u == 0)
    k_out, k_in = sch.split(ak, [None, ku])
    sch.reorder(k_out, k_in, am, an)
    sch.vectorize(an)
    sch.unroll(am)
    sch.unroll(k_in)
    sch.vectorize(n_in)
    tile = sch.fuse(n_out, *others, m_out)
    if threads > 1:
        sch.parallel(tile)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "dense_packed").with_attr("op_pattern", OPAQUE)


# ---- planning a program ------------------------------------------------------------------
@dataclass
class PackedLinear:
    lead: tuple[int, ...]
    k: int
    n: int
    tiles: DenseTiles
    weight: str  # the parameter's name
    transposed: bool = False  # `matmul(x, W)` with W [K, N] (GPT-2's Conv1D): packed from W^T
    batch: int = 0  # `matmul(x, W)` with W [E, K, N] stacked (experts): `dense_batched.py`
    x_batched: bool = False  # with `batch`: x is [E, T, K] (else [T, K], shared by all E)


@dataclass
class DensePlan:
    """Which linears of a block take the packed kernel, decided before lowering.

    A linear qualifies when it is float32, its weight is a `kiln.param`, it is alone in
    its fusion group and `use_packed` says so; so does `matmul(x, W)` with a 2-d parameter
    W [K, N] (GPT-2's Conv1D, `x @ W` layers), packed from W^T. A parameter whose every use is the weight
    of a packed linear is bound packed only (`replaced`): the executable never sees it.
    """

    sites: dict[KilnOp, PackedLinear] = field(default_factory=dict)
    replaced: set[str] = field(default_factory=set)
    paths: dict[str, str] = field(default_factory=dict)  # weight -> path taken, and why
    threads: int = 2
    _packed: dict[tuple[str, int], relax.Var] = field(default_factory=dict)

    @staticmethod
    def of(block: Any, options: DenseOptions | None = None) -> DensePlan:
        options = options or DenseOptions()
        plan = DensePlan(threads=options.threads)
        lanes, cpu = host_lanes(), host_cpu()
        sizes = group_sizes(block)
        for op in block.ops:
            if not _dense_like(op):
                continue  # a quantized weight (a dequantize) takes quant_lower.py's path
            site, why = _site(op, sizes, options, lanes, cpu)
            plan.paths[op.operands[1].owner.opt("name")] = why
            if site is not None:
                plan.sites[op] = site
        packed_only: dict[str, bool] = {}  # several param ops may share a name
        for op in block.ops:
            if isinstance(op, ParamOp):
                only = all(u.operation in plan.sites and u.index == 1 for u in op.result.uses)
                packed_only[op.opt("name")] = packed_only.get(op.opt("name"), True) and only
        weights = {site.weight for site in plan.sites.values()}
        plan.replaced = {name for name, only in packed_only.items() if only and name in weights}
        return plan

    def emit(self, bb: relax.BlockBuilder, step: list[KilnOp], env: dict, derived: Any) -> bool:
        """Emit `step` if it is a packed linear; False leaves it to the lowering's table."""
        site = self.sites.get(step[0]) if len(step) == 1 else None
        if site is None:
            return False
        op = step[0]
        bias = isinstance(op, LinearOp) and op.bias is not None
        if site.batch:
            from backends.tvm.dense_batched import batched_packed_func

            func = batched_packed_func(site.batch, site.lead[-1], site.k, site.n, site.tiles, site.x_batched,
                                       self.threads)
        else:
            func = dense_packed_func(site.lead, site.k, site.n, site.tiles, bias, self.threads)
        dims = "x".join(map(str, ((site.batch,) if site.batch else ()) + (*site.lead, site.k, site.n)))
        gv = bb.add_func(
            func.without_attr("global_symbol"), f"kiln_dense_{dims}" + ("_bias" if bias else "")
        )
        args = [env[op.operands[0]], self._packed_weight(site, derived)] + (
            [env[op.bias]] if bias else []
        )
        out_ty = relax.TensorType([*site.lead, site.n] if not site.batch else [site.batch, site.lead[-1], site.n],
                                  "float32")
        env[op.results[0]] = bb.emit(relax.call_tir(gv, args, out_ty))
        return True

    def _packed_weight(self, site: PackedLinear, derived: Any) -> relax.Var:
        key = (site.weight, site.tiles.nb, site.transposed)
        if key not in self._packed:
            nb, name, t = site.tiles.nb, site.weight, site.transposed
            shape = [math.ceil(site.n / nb), site.k, nb]
            if site.batch:
                from backends.tvm.dense_batched import pack_stacked

                shape, pack = [site.batch, *shape], lambda p: pack_stacked(p[name], nb)
            else:
                pack = lambda p: pack_weight(p[name].t().contiguous() if t else p[name], nb)  # noqa: E731
            self._packed[key] = derived.add(f"{name}.packed{nb}" + ("t" if t else ""), pack, shape, "float32")
        return self._packed[key]


def _dense_like(op: KilnOp) -> bool:
    """A linear on a parameter weight, `matmul(x, W)` with W a 2-d parameter, or with W a
    stack of weights [E, K, N] and x [T, K] or [E, T, K] (dense experts)."""
    if not isinstance(op, LinearOp | MatmulOp) or not isinstance(op.operands[1].owner, ParamOp):
        return False
    if isinstance(op, LinearOp):
        return True
    xs, ws = dtypes.shape_of(op.operands[0].type), dtypes.shape_of(op.operands[1].type)
    return len(ws) == 2 or (len(ws) == 3 and (len(xs) == 2 or (len(xs) == 3 and xs[0] == ws[0])))


def _site(
    op: LinearOp | MatmulOp, sizes: dict[int, int], options: DenseOptions, lanes: int, cpu: str
) -> tuple[PackedLinear | None, str]:
    """The packed problem of a linear, or None and why it stays on the library path."""
    if not alone(op, sizes):
        return None, "library: fused with other ops"
    if any(dtypes.dtype_of(v.type) != torch.float32 for v in [*op.operands, op.results[0]]):
        return None, "library: not float32"
    transposed = isinstance(op, MatmulOp)
    xs, ws = dtypes.shape_of(op.operands[0].type), dtypes.shape_of(op.operands[1].type)
    if len(xs) < 2:
        return None, "library: 1-d input"
    if len(ws) == 3:
        return _stacked_site(op, xs, ws, options, lanes, cpu)
    n, k = ws
    if transposed:
        n, k = k, n
    m = math.prod(xs[:-1])
    if not use_packed(m, k, n, options, lanes, cpu):
        return None, f"library: {m}x{k}->{n} outside the rule (policy {options.policy})"
    tiles = choose_tiles(tiled_length(tuple(xs[:-1])), n, lanes)
    group = op.attributes.get("group")
    tuned = dict(options.tuned).get(group.value.data) if group is not None else None
    site = PackedLinear(tuple(xs[:-1]), k, n, tuned or tiles, op.operands[1].owner.opt("name"), transposed)
    tiles = site.tiles
    return site, f"packed: {m}x{k}->{n}, nb={tiles.nb} mt={tiles.mt}" + (f" ku={tiles.ku} (tuned)" if tuned else "")


def _stacked_site(
    op: MatmulOp, xs: list[int], ws: list[int], options: DenseOptions, lanes: int, cpu: str
) -> tuple[PackedLinear | None, str]:
    """`x @ W` with W [E, K, N]: the rule is asked per expert (T rows of K -> N)."""
    (e, k, n), t = ws, xs[-2]
    if not use_packed(t, k, n, options, lanes, cpu):
        return None, f"library: {e}x({t}x{k}->{n}) outside the rule (policy {options.policy})"
    tiles = choose_tiles(t, n, lanes)
    site = PackedLinear((t,), k, n, tiles, op.operands[1].owner.opt("name"), True, e, len(xs) == 3)
    return site, f"packed: {e}x({t}x{k}->{n}), nb={tiles.nb} mt={tiles.mt}"
