"""Read-only questions about a TIR block's expressions, asked by the CPU schedules.

TVM 0.27 exposes no Python expression visitor for TIR (``tvm.tir.stmt_functor`` is gone),
so this walks PrimExpr fields directly. Two questions matter to ``schedule.py``:

- which block iterators appear in the innermost (contiguous) index of each access, to tell
  a row reduction (innermost index is reduced) from a column one (innermost index is an
  output axis, as in ``C[i, j] += A[i, k] * B[k, j]`` or a pooling window);
- at which constant points an ``if_then_else`` / ``select`` on an iterator flips (concat,
  padding), so the loop can be partitioned into branch-free pieces that vectorize.
"""

from __future__ import annotations

from collections.abc import Iterator

from tvm import tirx
from tvm.ir import TensorLoad
from tvm.ir.prim.expr import EQ, GE, GT, LE, LT, NE, Add, IntImm, Select, Sub

_CHILD_FIELDS = ("a", "b", "value", "condition", "true_value", "false_value", "base", "body")


def walk(expr: object) -> Iterator[object]:
    """Every sub-expression of ``expr`` (pre-order), including ``expr`` itself."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        for name in _CHILD_FIELDS:
            child = getattr(node, name, None)
            if child is not None and not isinstance(child, str | int | float):
                stack.append(child)
        for name in ("args", "indices"):
            children = getattr(node, name, None)
            if children is not None:
                stack.extend(children)


def uses_var(expr: object, var: tirx.Var) -> bool:
    """Whether ``var`` occurs in ``expr``."""
    return any(isinstance(e, tirx.Var) and e.same_as(var) for e in walk(expr))


def input_indices(block: object) -> list[list[object]]:
    """The index list of every load in the block, except loads of its own output.

    A reduction reads its accumulator (``acc[i] = acc[i] + x[i, k]``); that load says
    nothing about how the inputs are laid out, so it is skipped.
    """
    body = block.body
    if not isinstance(body, tirx.BufferStore):
        return [list(e.indices) for e in walk(body) if isinstance(e, TensorLoad) and e.indices]
    return [
        list(e.indices)
        for e in walk(body.value)
        if isinstance(e, TensorLoad) and e.indices and not _same_buffer(e.source, body.buffer)
    ]


def is_unit_stride(index: object, var: tirx.Var) -> bool:
    """Whether ``index`` is ``var`` plus terms free of ``var`` (stride 1 along ``var``).

    A strided window read such as ``x[.., 2 * w + kw]`` is not: vectorizing ``w`` there
    makes gathers, measured 3x slower than the scalar loop LLVM emits by itself.
    """
    if isinstance(index, tirx.Var):
        return index.same_as(var)
    if isinstance(index, Add):
        a, b = index.a, index.b
        return (is_unit_stride(a, var) and not uses_var(b, var)) or (
            is_unit_stride(b, var) and not uses_var(a, var)
        )
    if isinstance(index, Sub):
        return is_unit_stride(index.a, var) and not uses_var(index.b, var)
    return False


def output_innermost_index(block: object) -> object | None:
    """The last-dimension index the block writes, if its body is a single store."""
    body = block.body
    if isinstance(body, tirx.BufferStore) and body.indices:
        return body.indices[-1]
    return None


def _same_buffer(source: object, buffer: object) -> bool:
    # A load names its buffer (0.27: ``TensorLoad.source``) as the Buffer or its data var.
    return source.same_as(buffer) or source.same_as(getattr(buffer, "data", None))


def _is_if_then_else(node: object) -> bool:
    op = getattr(node, "op", None)
    return op is not None and getattr(op, "name", "") in ("prim.if_then_else", "tirx.if_then_else")


def split_points(block: object, var: tirx.Var) -> list[int]:
    """Constants ``c`` where a branch condition on ``var`` changes between ``c - 1`` and ``c``.

    Only conditions of the form ``var <op> const`` (either side) count; anything else makes
    the block not partitionable and returns ``[]``.
    """
    points: set[int] = set()
    for node in walk(block.body):
        if _is_if_then_else(node):
            cond = node.args[0]
        elif isinstance(node, Select):
            cond = node.condition
        else:
            continue
        point = _boundary(cond, var)
        if point is None:
            return []
        points.add(point)
    return sorted(points)


def _boundary(cond: object, var: tirx.Var) -> int | None:
    if not isinstance(cond, LT | LE | GT | GE | EQ | NE):
        return None
    a, b = cond.a, cond.b
    if isinstance(a, tirx.Var) and a.same_as(var) and isinstance(b, IntImm):
        c = int(b.value)
        # var < c, var >= c: flips at c; var <= c, var > c: flips at c + 1
        return {LT: c, GE: c, LE: c + 1, GT: c + 1}.get(type(cond))
    if isinstance(b, tirx.Var) and b.same_as(var) and isinstance(a, IntImm):
        c = int(a.value)
        # c <= var, c > var: flips at c; c < var, c >= var: flips at c + 1
        return {LE: c, GT: c, LT: c + 1, GE: c + 1}.get(type(cond))
    return None
