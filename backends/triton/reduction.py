"""Row-reduction template: softmax, log_softmax, layer_norm, rms_norm and reduce, with prologue
and epilogue elementwise ops, as one kernel.

The "row" is the set of reduced elements; kept dims index the rows. A program owns ROWS
rows (many short rows per program, as Inductor's persistent reductions do) and visits
them in chunks of BLOCK_N columns, masked at the ragged ends, with per-lane accumulators
folded across lanes once at the end:

- softmax / log_softmax: online max and rescaled sum in a single pass;
- layer_norm: sums of (x - x0) and (x - x0)^2, shifted by the row's first element for
  stability, in a single pass;
- rms_norm: sum of squares; reduce: sum, mean, max, min.

Reductions that read other reductions of the group (a hand-written layer norm: mean, then
the variance of x - mean) get one statistics pass per dependency level. A final pass
recomputes the prologue per chunk and writes the full-size outputs; per-row outputs (a
reduce result, or anything computed from it) are stored once per row.

Refused (the group is split): reductions over different shapes or dims in one group,
outputs that are neither the row domain's shape nor a per-row shape, and a reduction
result read at another row (through a permute, say).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from xdsl.ir import Operation, SSAValue

from backends.triton.emitter import (
    ZERO,
    Expr,
    Idx,
    KernelEmitter,
    TemplateMismatch,
    compute_dtype,
    dtype_of,
    literal,
    shape_of,
)
from backends.triton.groups import REDUCTION_OPS, Group
from backends.triton.kernel_spec import BIG, KernelSpec, TemplateContext, cdiv, program_id
from ir.core import normalize_dim


def reduced_dims(op: Operation) -> tuple[int, ...]:
    rank = len(shape_of(op.operands[0]))
    if op.name == "kiln.reduce":
        return tuple(sorted({normalize_dim(d, rank) for d in op.opt("dims")}))
    if op.name in ("kiln.softmax", "kiln.log_softmax"):
        return (normalize_dim(op.opt("dim"), rank),)
    return tuple(range(rank - op.opt("ndims"), rank))  # layer_norm, rms_norm


class _Row:
    """The iteration space: rows (kept dims) x columns (reduced dims), and the current chunk.

    A program owns ROWS rows ([ROWS, 1] in every tile) and walks their columns in
    [1, BLOCK_N] chunks; per-row statistics are [ROWS, 1], so they broadcast over a chunk.
    """

    def __init__(
        self, em: KernelEmitter, domain: tuple[int, ...], reduced: tuple[int, ...]
    ) -> None:
        self.em, self.domain, self.reduced = em, domain, reduced
        self.kept = tuple(d for d in range(len(domain)) if d not in reduced)
        self.n = math.prod(domain[d] for d in reduced)
        self.rows = math.prod(domain[d] for d in self.kept)
        self.trailing = reduced == tuple(range(len(domain) - len(reduced), len(domain)))
        em.line(f"pid = {program_id(0, self.rows * self.n > BIG)}")
        em.line("rows = pid * ROWS + tl.arange(0, ROWS)")
        self.row = Expr("rows[:, None]", frozenset({f"(rows[:, None] < {self.rows})"}))
        kept_shape = tuple(domain[d] for d in self.kept)
        self.row_dims = em.dims_of(Idx(kept_shape, flat=self.row))
        self.current: Idx | None = None
        self.cols: Expr | None = None

    def _dims(self, col_dims: tuple[Expr, ...]) -> tuple[Expr, ...]:
        dims: list[Expr] = [ZERO] * len(self.domain)
        for d, e in zip(self.kept, self.row_dims):
            dims[d] = e
        for d, e in zip(self.reduced, col_dims):
            dims[d] = e
        return tuple(dims)

    def enter_chunk(self) -> Idx:
        """Inside a `for start` loop: the domain index of this chunk's columns."""
        em = self.em
        name = em.var("start + tl.arange(0, BLOCK_N)", prefix="cols")
        self.cols = Expr(f"{name}[None, :]", frozenset({f"({name}[None, :] < {self.n})"}))
        col_dims = em.dims_of(Idx(tuple(self.domain[d] for d in self.reduced), flat=self.cols))
        flat = None
        if self.trailing:
            masks = self.cols.masks | self.row.masks
            flat = em.var(f"{self.row} * {self.n} + {self.cols}", masks, prefix="f")
        self.current = Idx(self.domain, dims=self._dims(col_dims), flat=flat)
        if flat is not None:
            em.declare(self.current)
        return self.current

    def chunk_mask(self) -> frozenset[str]:
        return self.row.masks | self.cols.masks  # type: ignore[union-attr]

    def first_column(self) -> Idx:
        return Idx(self.domain, dims=self._dims((ZERO,) * len(self.reduced)))

    def row_index(self, shape: tuple[int, ...]) -> Idx:
        """Index of this row in a per-row shape: kept dims only, with 1s for reduced dims,
        or any shape of `rows` elements (the row's flat offset)."""
        if shape == tuple(self.domain[d] for d in self.kept):
            return Idx(shape, dims=self.row_dims, flat=self.row)
        if self.is_row_shape(shape):
            return Idx(shape, dims=self._dims((ZERO,) * len(self.reduced)))
        return Idx(shape, flat=self.row)

    def is_row_shape(self, shape: tuple[int, ...]) -> bool:
        keep = tuple(self.domain[d] for d in self.kept)
        ones = tuple(1 if d in self.reduced else s for d, s in enumerate(self.domain))
        return shape in (keep, ones)

    def check_same_row(self, op: Operation, idx: Idx) -> None:
        cur = self.current
        if (
            cur is not None
            and idx.flat is not None
            and cur.flat is not None
            and idx.flat.text == cur.flat.text
        ):
            return
        dims = self.em.dims_of(idx)
        if len(dims) == len(self.domain):
            kept = tuple(dims[d].text for d in self.kept)
        else:
            kept = tuple(d.text for d in dims)
        if kept != tuple(d.text for d in self.row_dims):
            raise TemplateMismatch(
                f"{op.name} result is read at another row (through data movement)"
            )


def emit_reduction(group: Group, ctx: TemplateContext) -> list[KernelSpec]:
    reds = [op for op in group.ops if op.name in REDUCTION_OPS]
    domain, reduced = shape_of(reds[0].operands[0]), reduced_dims(reds[0])
    for op in reds[1:]:
        if (shape_of(op.operands[0]), reduced_dims(op)) != (domain, reduced):
            raise TemplateMismatch(f"reductions over different rows: {reds[0].name} and {op.name}")
    em = ctx.emitter(f"{group.name}_reduction", group)
    row = _Row(em, domain, reduced)
    knobs = ctx.knobs("reduction", {"N": row.n, "R": row.rows})
    full = [o for o in group.outputs if math.prod(shape_of(o)) == row.rows * row.n]
    per_row = [o for o in group.outputs if o not in full]
    for o in group.outputs:
        shape = shape_of(o)
        if (o in full and shape != domain and not row.trailing) or (
            o in per_row and math.prod(shape) != row.rows
        ):
            raise TemplateMismatch(
                f"output of shape {shape} is neither the row domain {domain} nor per-row"
            )
    levels = _levels(group)
    for level in sorted({levels[op.results[0]] for op in reds}):
        ops = [op for op in reds if levels[op.results[0]] == level]
        stats = [_STATS[op.name](em, row, op) for op in ops]
        with em.block(f"for start in range(0, {row.n}, BLOCK_N):"):
            idx = row.enter_chunk()
            for st in stats:
                st.update(em.value(st.op.operands[0], idx))
        row.current = None
        for st in stats:
            st.finish()
            em.anchors[st.op.results[0]] = st.at
        _hoist(em, row, group, levels, level)
    for o in per_row:
        idx = row.row_index(shape_of(o))
        em.store(em.output_arg(o), em.flat_of(idx), em.value(o, idx), dtype_of(o), row.row.masks)
    if full:
        with em.block(f"for start in range(0, {row.n}, BLOCK_N):"):
            dom = row.enter_chunk()
            for o in full:
                # Another shape of as many elements (a reshape of the rows): same flat offset.
                idx = dom if shape_of(o) == domain else Idx(shape_of(o), flat=dom.flat)
                em.store(
                    em.output_arg(o),
                    em.flat_of(idx),
                    em.value(o, idx),
                    dtype_of(o),
                    row.chunk_mask(),
                )
        row.current = None
    source = em.source(list(knobs.constexprs()))
    return [
        KernelSpec(
            em.name, "reduction", group.name, source, em.args, knobs, (cdiv(row.rows, knobs.ROWS),)
        )
    ]


def _levels(group: Group) -> dict[SSAValue, int]:
    """Statistics pass each value needs: a reduction is 1 + the deepest reduction it reads."""
    level: dict[SSAValue, int] = {}
    for op in group.ops:
        lv = max((level.get(o, 0) for o in op.operands), default=0)
        for r in op.results:
            level[r] = lv + (op.name in REDUCTION_OPS)
    return level


def _hoist(
    em: KernelEmitter, row: _Row, group: Group, levels: dict[SSAValue, int], done: int
) -> None:
    """Compute per-row values (rsqrt(mean + eps), ...) once per row, before the next loop
    reads them in every chunk: the loop then finds them in the emitter's memo."""
    for op in group.ops:
        r = op.results[0]
        if levels[r] <= done and op.name not in REDUCTION_OPS and row.is_row_shape(shape_of(r)):
            try:
                em.value(r, row.row_index(shape_of(r)))
            except TemplateMismatch:
                pass  # not a per-row value after all (read through data movement): computed where used


class _Stat:
    """Accumulators of one reduction op: init before the loop, update per chunk, finish after."""

    def __init__(self, em: KernelEmitter, row: _Row, op: Operation) -> None:
        self.em, self.row, self.op = em, row, op
        self.dtype = compute_dtype(dtype_of(op.operands[0]))
        self.tl_dtype = {torch.float64: "tl.float64"}.get(self.dtype, "tl.float32")
        self.init()

    def acc(self, fill: str) -> str:
        name = self.em.fresh("acc")
        self.em.line(f"{name} = tl.full([ROWS, BLOCK_N], {fill}, {self.tl_dtype})")
        return name

    def masked(self, x: Expr, fill: str) -> str:
        return f"tl.where({' & '.join(sorted(self.row.chunk_mask()))}, {x}, {fill})"

    def same_row(self, idx: Idx) -> None:
        self.row.check_same_row(self.op, idx)

    def init(self) -> None: ...
    def update(self, x: Expr) -> None: ...
    def finish(self) -> None: ...
    def at(self, idx: Idx) -> Expr: ...


class _Reduce(_Stat):
    FILL: ClassVar[dict[str, str]] = {
        "sum": "0.0",
        "mean": "0.0",
        "max": 'float("-inf")',
        "min": 'float("inf")',
    }
    STEP: ClassVar[dict[str, str]] = {
        "sum": "{a} + {x}",
        "mean": "{a} + {x}",
        "max": "tl.maximum({a}, {x})",
        "min": "tl.minimum({a}, {x})",
    }
    FOLD: ClassVar[dict[str, str]] = {
        "sum": "tl.sum",
        "mean": "tl.sum",
        "max": "tl.max",
        "min": "tl.min",
    }

    def init(self) -> None:
        self.kind = self.op.opt("kind")
        self.a = self.acc(self.FILL[self.kind])

    def update(self, x: Expr) -> None:
        self.em.line(
            f"{self.a} = "
            + self.STEP[self.kind].format(a=self.a, x=self.masked(x, self.FILL[self.kind]))
        )

    def finish(self) -> None:
        text = f"{self.FOLD[self.kind]}({self.a}, 1)[:, None]"
        self.result = self.em.var(
            text + (f" / {self.row.n}" if self.kind == "mean" else ""), prefix="r"
        )

    def at(self, idx: Idx) -> Expr:
        self.same_row(idx)
        return self.result


class _Softmax(_Stat):
    def init(self) -> None:
        self.m, self.s = self.acc('float("-inf")'), self.acc("0.0")

    def update(self, x: Expr) -> None:
        em, m, s = self.em, self.m, self.s
        xm = em.var(self.masked(x, 'float("-inf")'))
        new = em.var(f"tl.maximum({m}, {xm})")
        safe = em.var(f'tl.where({new} == float("-inf"), 0.0, {new})')
        em.line(f"{s} = {s} * tl.exp({m} - {safe}) + tl.exp({xm} - {safe})")
        em.line(f"{m} = {new}")

    def finish(self) -> None:
        em = self.em
        self.max = em.var(f"tl.max({self.m}, 1)[:, None]", prefix="r")
        safe = em.var(f'tl.where({self.max} == float("-inf"), 0.0, {self.max})')
        self.sum = em.var(f"tl.sum({self.s} * tl.exp({self.m} - {safe}), 1)[:, None]", prefix="r")
        if self.op.name == "kiln.log_softmax":
            self.lse = em.var(f"{self.max} + tl.log({self.sum})", prefix="r")

    def at(self, idx: Idx) -> Expr:
        self.same_row(idx)
        x = self.em.value(self.op.operands[0], idx)
        if self.op.name == "kiln.log_softmax":
            return self.em.var(f"{x} - {self.lse}", x.masks)
        return self.em.var(f"tl.exp({x} - {self.max}) / {self.sum}", x.masks)


class _Norm(_Stat):
    """layer_norm (shifted sums) and rms_norm (sum of squares), then the affine map."""

    def init(self) -> None:
        self.layer = self.op.name == "kiln.layer_norm"
        if self.layer:
            self.shift = self.em.value(self.op.operands[0], self.row.first_column())
            self.a1 = self.acc("0.0")
        self.a2 = self.acc("0.0")

    def update(self, x: Expr) -> None:
        em = self.em
        d = em.var(self.masked(Expr(f"({x} - {self.shift})") if self.layer else x, "0.0"))
        if self.layer:
            em.line(f"{self.a1} = {self.a1} + {d}")
        em.line(f"{self.a2} = {self.a2} + {d} * {d}")

    def finish(self) -> None:
        em, n = self.em, self.row.n
        eps = literal(self.op.opt("eps"), torch.float32)
        if self.layer:
            ms = em.var(f"tl.sum({self.a1}, 1)[:, None] / {n}", prefix="r")
            var = em.var(
                f"tl.maximum(tl.sum({self.a2}, 1)[:, None] / {n} - {ms} * {ms}, 0.0)", prefix="r"
            )
            self.mean = em.var(f"{self.shift} + {ms}", prefix="r")
            self.rstd = em.var(f"tl.rsqrt({var} + {eps})", prefix="r")
        else:
            self.rstd = em.var(f"tl.rsqrt(tl.sum({self.a2}, 1)[:, None] / {n} + {eps})", prefix="r")

    def at(self, idx: Idx) -> Expr:
        self.same_row(idx)
        em, op = self.em, self.op
        x = em.value(op.operands[0], idx)
        text = f"({x} - {self.mean}) * {self.rstd}" if self.layer else f"{x} * {self.rstd}"
        dims = em.dims_of(idx)
        masks = set(x.masks)
        for name in ("weight", "bias"):
            operand = getattr(op, name, None)
            if operand is None:
                continue
            shape = shape_of(operand)
            value = em.value(operand, Idx(shape, dims=dims[len(dims) - len(shape) :]))
            masks |= value.masks
            text = f"{text} * {value}" if name == "weight" else f"{text} + {value}"
        return em.var(text, frozenset(masks))


_STATS = {
    "kiln.reduce": _Reduce,
    "kiln.softmax": _Softmax,
    "kiln.log_softmax": _Softmax,
    "kiln.layer_norm": _Norm,
    "kiln.rms_norm": _Norm,
}
