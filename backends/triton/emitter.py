"""The heart of every template: emit Triton code for "value v of the group at index idx".

A kernel template fixes the iteration space (a flat block of elements, a row chunk, a
matmul tile) and asks `KernelEmitter.value(v, idx)` for the group's values there.
Evaluation pulls backwards through the group, as Inductor's loop bodies do:

- an elementwise op evaluates its operands at the same index (broadcast dims read 0);
- data movement only rewrites the index (reshape keeps the flat offset, permute swaps
  dims, slice scales and shifts one, expand reads 0 on broadcast dims, concat selects an
  input under a predicate, embedding gathers a row);
- a value from outside the group is a masked `tl.load`;
- an anchor (matmul accumulator, reduction statistics) is whatever the template
  registered in `anchors`; it may refuse an index (a reduction read at another row) by
  raising `TemplateMismatch`, and the group is then split.

Indices are symbolic: each dim is an `Expr` (Triton source text plus the masks of the
block axes it varies along), so a load knows its own mask and a scalar stays a scalar.
Results are memoized per (value, index, predicate) within the current code block, so a
value read twice at one index is computed once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from xdsl.ir import Operation, SSAValue

from ir import dtypes


class TemplateMismatch(Exception):
    """The group does not fit the template; the message says which op and why."""


@dataclass(frozen=True)
class Expr:
    text: str
    masks: frozenset[str] = frozenset()  # validity conditions of the block axes it varies along
    value: float | int | bool | None = None  # set for a Python literal (weakly typed in Triton)
    zero_filled: bool = False  # a load whose masked lanes read 0

    def __str__(self) -> str:
        return self.text

    @property
    def is_literal(self) -> bool:
        return self.value is not None

    def mask_text(self) -> str | None:
        return " & ".join(sorted(self.masks)) or None


ZERO = Expr("0", value=0)


def literal(value: float | bool, dtype: torch.dtype) -> Expr:
    """A Python literal for a scalar constant, written in the compute type of `dtype`."""
    if dtype == torch.bool:
        v: float | int | bool = bool(value)
        return Expr(str(v), value=v)
    if dtype.is_floating_point:
        v = float(value)
        text = repr(v) if math.isfinite(v) else f'float("{v}")'
        return Expr(f"({text})" if v < 0 else text, value=v)
    v = int(value)
    return Expr(f"({v})" if v < 0 else str(v), value=v)


def union(*exprs: Expr) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for e in exprs:
        out |= e.masks
    return out


def strides_of(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for size in reversed(shape):
        out.append(acc)
        acc *= size
    return tuple(reversed(out))


@dataclass(frozen=True)
class Idx:
    """An index into a tensor of `shape`: per-dim expressions, the flat offset, or both."""

    shape: tuple[int, ...]
    dims: tuple[Expr, ...] | None = None
    flat: Expr | None = None

    def key(self) -> tuple:
        if self.flat is not None:
            return ("flat", self.shape, self.flat.text)
        return ("dims", self.shape, tuple(d.text for d in self.dims or ()))


# Triton spelling of each storage dtype and the dtype values are computed in. Half-precision
# values are computed in fp32 and rounded on store, as Inductor does (GPU math units and
# libdevice want fp32).
TL_DTYPE = {
    torch.float32: "tl.float32",
    torch.float16: "tl.float16",
    torch.bfloat16: "tl.bfloat16",
    torch.float64: "tl.float64",
    torch.int64: "tl.int64",
    torch.int32: "tl.int32",
    torch.int8: "tl.int8",
    torch.bool: "tl.int1",
}
POINTER_TYPE = {
    torch.float32: "*fp32",
    torch.float16: "*fp16",
    torch.bfloat16: "*bf16",
    torch.float64: "*fp64",
    torch.int64: "*i64",
    torch.int32: "*i32",
    torch.int8: "*i8",
    torch.bool: "*i1",
}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def dtype_of(value: SSAValue) -> torch.dtype:
    return dtypes.dtype_of(value.type)


def shape_of(value: SSAValue) -> tuple[int, ...]:
    return dtypes.shape_of(value.type)


def cast(expr: Expr, src: torch.dtype, dst: torch.dtype) -> Expr:
    """`expr` (in the compute type of `src`) converted to the compute type of `dst`."""
    src, dst = compute_dtype(src), compute_dtype(dst)
    if src == dst:
        return expr
    if expr.is_literal:
        return literal(expr.value, dst)  # type: ignore[arg-type]
    if dst == torch.bool:
        return Expr(f"({expr} != 0)", expr.masks)
    return Expr(f"{expr}.to({TL_DTYPE[dst]})", expr.masks)


@dataclass
class KernelArg:
    name: str
    value: SSAValue | None  # the tensor behind it (None: scratch the template allocates)
    dtype: torch.dtype
    role: str  # "in" | "out" | "scratch"


# Evaluates one op (of the group) at an index; see `lowering.py` for the table.
PullRule = Callable[["KernelEmitter", Operation, Idx], Expr]


@dataclass
class KernelEmitter:
    """Writes one `@triton.jit` function; templates drive it, `value` fills in the group."""

    name: str
    group_ops: dict[SSAValue, Operation]  # group-internal value -> the op defining it
    scalars: dict[SSAValue, Expr]  # values folded to literals (scalar constants)
    rules: dict[str, PullRule]
    lines: list[str] = field(default_factory=list)
    args: list[KernelArg] = field(default_factory=list)
    anchors: dict[SSAValue, Callable[[Idx], Expr]] = field(default_factory=dict)
    predicates: list[str] = field(default_factory=list)
    _indent: int = 1
    _scopes: list[dict] = field(default_factory=lambda: [{}])
    _counter: int = 0
    _arg_of: dict[SSAValue, str] = field(default_factory=dict)

    # ---- writing ------------------------------------------------------------------------
    def line(self, text: str) -> None:
        self.lines.append("    " * self._indent + text)

    def fresh(self, prefix: str = "t") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def var(self, text: str, masks: frozenset[str] = frozenset(), prefix: str = "t", **kw) -> Expr:
        name = self.fresh(prefix)
        self.line(f"{name} = {text}")
        return Expr(name, masks, **kw)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """An indented block (loop body or branch) with its own memo scope."""
        self.line(header)
        self._indent += 1
        self._scopes.append({})
        try:
            yield
        finally:
            self._scopes.pop()
            self._indent -= 1

    @contextmanager
    def predicate(self, cond: str) -> Iterator[None]:
        self.predicates.append(cond)
        try:
            yield
        finally:
            self.predicates.pop()

    def _memo(self, key: tuple) -> Expr | None:
        for scope in reversed(self._scopes):
            if key in scope:
                return scope[key]
        return None

    def _remember(self, key: tuple, expr: Expr) -> Expr:
        self._scopes[-1][key] = expr
        return expr

    # ---- arguments ----------------------------------------------------------------------
    def input_arg(self, value: SSAValue) -> str:
        if value not in self._arg_of:
            name = f"in{sum(a.role == 'in' for a in self.args)}"
            self.args.append(KernelArg(name, value, dtype_of(value), "in"))
            self._arg_of[value] = name
        return self._arg_of[value]

    def output_arg(self, value: SSAValue) -> str:
        name = f"out{sum(a.role == 'out' for a in self.args)}"
        self.args.append(KernelArg(name, value, dtype_of(value), "out"))
        return name

    def scratch_arg(self, name: str, dtype: torch.dtype) -> str:
        self.args.append(KernelArg(name, None, dtype, "scratch"))
        return name

    # ---- indices ------------------------------------------------------------------------
    def dims_of(self, idx: Idx) -> tuple[Expr, ...]:
        if idx.dims is not None:
            return idx.dims
        assert idx.flat is not None
        # Size-1 dims index 0 and do not change the others: unravelling one offset into
        # (64, 256) or (64, 256, 1) gives the same variables, so indices compare equal.
        sizes = tuple(s for s in idx.shape if s != 1)
        key = ("unravel", sizes, idx.flat.text)
        inner = self._memo(key)
        if inner is None:
            dims: list[Expr] = []
            for d, (size, stride) in enumerate(zip(sizes, strides_of(sizes))):
                text = idx.flat.text if stride == 1 else f"({idx.flat} // {stride})"
                if d > 0:
                    text = f"{text} % {size}"
                dims.append(self.var(text, idx.flat.masks, prefix="i"))
            inner = self._remember(key, tuple(dims))  # type: ignore[arg-type]
        it = iter(inner)  # type: ignore[call-overload]
        out = tuple(ZERO if s == 1 else next(it) for s in idx.shape)
        self._remember(("ravel", idx.shape, tuple(d.text for d in out)), idx.flat)
        return out

    def flat_of(self, idx: Idx) -> Expr:
        if idx.flat is not None:
            return idx.flat
        dims = self.dims_of(idx)
        known = self._memo(("ravel", idx.shape, tuple(d.text for d in dims)))
        if known is not None:
            return known  # these dims were unravelled from this flat offset
        terms = [
            d.text if stride == 1 else f"{d} * {stride}"
            for d, size, stride in zip(dims, idx.shape, strides_of(idx.shape))
            if size != 1 and d.text != "0"
        ]
        if not terms:
            return ZERO
        if len(terms) == 1 and terms[0] == dims[-1].text:
            return dims[-1]
        key = ("flatten", idx.key())
        cached = self._memo(key)
        if cached is not None:
            return cached
        flat = self._remember(key, self.var(" + ".join(terms), union(*dims), prefix="f"))
        inner = tuple(d for d, size in zip(dims, idx.shape) if size != 1)
        self._remember(
            ("unravel", tuple(s for s in idx.shape if s != 1), flat.text), inner
        )  # and back
        return flat

    def declare(self, idx: Idx) -> Idx:
        """Record that `idx.dims` and `idx.flat` are one index, so unravelling the flat offset
        (after a reshape) finds the dims and flattening the dims finds the offset."""
        assert idx.dims is not None and idx.flat is not None
        inner = tuple(d for d, size in zip(idx.dims, idx.shape) if size != 1)
        self._remember(("unravel", tuple(s for s in idx.shape if s != 1), idx.flat.text), inner)
        self._remember(("ravel", idx.shape, tuple(d.text for d in idx.dims)), idx.flat)
        return idx

    def broadcast(self, idx: Idx, shape: tuple[int, ...]) -> Idx:
        """Index into an operand of `shape` that broadcasts to `idx.shape` (numpy rules)."""
        if shape == idx.shape:
            return idx
        if idx.flat is not None and _strip(shape) == _strip(idx.shape):
            return Idx(shape, flat=idx.flat)  # only leading 1s differ: same flat offset
        dims = self.dims_of(idx)
        extra = len(shape) - len(idx.shape)
        if extra > 0:
            if any(s != 1 for s in shape[:extra]):
                raise TemplateMismatch(f"shape {shape} does not broadcast to {idx.shape}")
            dims = (ZERO,) * extra + dims
        else:
            dims = dims[len(dims) - len(shape) :]
        return Idx(shape, dims=tuple(ZERO if s == 1 else d for d, s in zip(dims, shape)))

    def store_index(self, anchor: SSAValue, tile: Idx, out: SSAValue) -> Idx:
        """Where `out` is computed from an anchor's tile: `tile` pushed forward through the
        reshapes, permutes and same-shape elementwise ops between them. Storing there (instead
        of pulling `out` at its own index) is what lets `linear -> reshape -> permute` (a
        head split) be one kernel: every tile element lands at its permuted address."""
        idx = tile
        for op in self._path(anchor, out):
            shape = shape_of(op.results[0])
            if op.name == "kiln.reshape":
                idx = Idx(shape, flat=self.flat_of(idx))
            elif op.name == "kiln.permute":
                dims = self.dims_of(idx)
                idx = Idx(shape, dims=tuple(dims[p] for p in op.opt("dims")))
            elif shape == idx.shape and op.name not in (
                "kiln.expand",
                "kiln.slice",
                "kiln.concat",
                "kiln.embedding",
            ):
                continue  # elementwise: same index
            else:
                raise TemplateMismatch(f"{op.name} after the anchor changes the iteration space")
        return idx

    def _path(self, anchor: SSAValue, out: SSAValue) -> list[Operation]:
        """The group's ops from `anchor` to `out`, when `out` depends on it through one chain."""
        path: list[Operation] = []
        v = out
        while v is not anchor:
            op = self.group_ops.get(v)
            if op is None:
                raise TemplateMismatch("a group output does not depend on the anchor op")
            deps = [o for o in op.operands if self.depends(o, anchor)]
            if len(deps) != 1:
                raise TemplateMismatch(
                    f"{op.name} reads the anchor's result through {len(deps)} operands"
                )
            path.append(op)
            v = deps[0]
        return path[::-1]

    def depends(self, v: SSAValue, anchor: SSAValue) -> bool:
        if v is anchor:
            return True
        op = self.group_ops.get(v)
        return op is not None and any(self.depends(o, anchor) for o in op.operands)

    # ---- values -------------------------------------------------------------------------
    def value(self, v: SSAValue, idx: Idx) -> Expr:
        """Triton expression of `v` at `idx` (in v's compute dtype)."""
        if v in self.scalars:
            return self.scalars[v]
        key = ("value", v, idx.key(), tuple(self.predicates))
        cached = self._memo(key)
        if cached is not None:
            return cached
        if v in self.anchors:
            expr = self.anchors[v](idx)
        elif v in self.group_ops:
            op = self.group_ops[v]
            rule = self.rules.get(op.name)
            if rule is None:
                raise TemplateMismatch(f"{op.name} has no Triton lowering inside a fused kernel")
            expr = rule(self, op, idx)
        else:
            expr = self.load(v, idx)
        return self._remember(key, expr)

    def load(self, v: SSAValue, idx: Idx) -> Expr:
        """A masked load of a tensor from outside the group."""
        ptr = self.input_arg(v)
        dtype = dtype_of(v)
        if math.prod(shape_of(v)) == 1:
            addr = ZERO
        else:
            addr = self.flat_of(idx)
        masks = addr.masks | frozenset(self.predicates)
        where = f"{ptr}" if addr.text == "0" else f"{ptr} + {addr}"
        if masks:
            text = f"tl.load({where}, mask={' & '.join(sorted(masks))}, other=0)"
        else:
            text = f"tl.load({where})"
        if compute_dtype(dtype) != dtype:
            text = f"{text}.to({TL_DTYPE[compute_dtype(dtype)]})"
        return self.var(text, addr.masks, prefix="x", zero_filled=True)

    def store(
        self, ptr: str, addr: Expr, expr: Expr, dtype: torch.dtype, masks: frozenset[str]
    ) -> None:
        text = expr.text
        if compute_dtype(dtype) != dtype:
            text = f"{text}.to({TL_DTYPE[dtype]})"
        mask = " & ".join(sorted(masks))
        where = f"{ptr}" if addr.text == "0" else f"{ptr} + {addr}"
        self.line(
            f"tl.store({where}, {text}, mask={mask})" if mask else f"tl.store({where}, {text})"
        )

    # ---- the function -------------------------------------------------------------------
    def source(self, constexprs: list[str]) -> str:
        params = [a.name for a in self.args] + [f"{c}: tl.constexpr" for c in constexprs]
        head = ["@triton.jit", f"def {self.name}({', '.join(params)}):"]
        return "\n".join(head + _drop_unused(self.lines)) + "\n"


_FRESH = re.compile(r"^\s*([a-z]+\d+) = ")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _drop_unused(lines: list[str]) -> list[str]:
    """Drop assignments to fresh temporaries nothing reads (an unravelled dim no load used)."""
    while True:
        used: set[str] = set()
        for line in lines:
            m = _FRESH.match(line)
            used.update(_WORD.findall(line[m.end() :] if m else line))
        kept = [
            line for line in lines if not ((m := _FRESH.match(line)) and m.group(1) not in used)
        ]
        if len(kept) == len(lines):
            return kept
        lines = kept


def _strip(shape: tuple[int, ...]) -> tuple[int, ...]:
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return shape[i:]
