"""Measured time of every kernel a TVM partition runs, attributed to Kiln's steps.

TVM 0.27's Relax VM has no profiler any more (`VirtualMachine(..., profile=True)` and
`vm.profile()` are gone), but it still calls an instrument before and after each Call
instruction (`VirtualMachine.set_instrument`). `recording` stamps both with
`perf_counter`, so each kernel's time is its real call on the real arguments, inside a
real run of the whole model, plus ~1 us of callback overhead (measured here on
`vm.builtin.check_tensor_info`, which does almost nothing). The instrument is set only
while the HTML report measures; ordinary calls never pay for it.

`attribute` maps each call back to the Kiln step that emitted it. Symbols are not enough
on their own: Relax's BlockBuilder shares one PrimFunc between structurally equal groups
(four residual adds all call `kiln_group_4`), and packed kernels are named by shape
(`kiln_dense_2x32x256x704`). Calls run in the order of `plan_steps` (the lowering emits
steps in that order), so the calls are aligned with the steps: an exact group id anchors
a call, a named kernel goes to the next step holding its op, and any other TIR call to the
next step that has not yet run a TIR kernel.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BUILTIN = "vm.builtin."
VIEWS = frozenset({"kiln.reshape"})  # lowered to a view of its input: no kernel
# symbol prefix -> the Kiln ops a step must hold to have emitted it (checked in order)
NAMED_KERNELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("kiln_dense_", frozenset({"kiln.linear", "kiln.matmul"})),
    ("kiln_qmm_", frozenset({"kiln.linear", "kiln.matmul", "kiln.dequantize"})),
    ("kiln_dequantize", frozenset({"kiln.dequantize"})),
    ("kiln_attention_", frozenset({"kiln.attention"})),
    ("kiln_conv_", frozenset({"kiln.conv2d"})),
    ("kiln_dw_", frozenset({"kiln.conv2d"})),
    ("kiln.sdpa", frozenset({"kiln.attention"})),
    ("kiln.linear", frozenset({"kiln.linear"})),
    ("kiln.matmul", frozenset({"kiln.matmul"})),
    ("kiln.conv2d", frozenset({"kiln.conv2d"})),
    ("kiln.embedding", frozenset({"kiln.embedding"})),
)


@contextmanager
def recording(vm: Any, calls: list[tuple[str, float]]) -> Iterator[None]:
    """Inside the block, every Call instruction of `vm` is appended as (symbol, seconds)."""
    stamp = [0.0]

    def instrument(func: Any, symbol: str, before: bool, ret: Any, *args: Any) -> int:
        now = time.perf_counter()
        if before:
            stamp[0] = time.perf_counter()  # the callback's own start-up is not the kernel's
        else:
            calls.append((str(symbol), now - stamp[0]))
        return 0

    vm.set_instrument(instrument)
    try:
        yield
    finally:
        vm.set_instrument(None)


def median_calls(runs: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    """Per call site, the median over runs (every run makes the same calls in the same order)."""
    first = runs[0]
    same = [r for r in runs if [s for s, _ in r] == [s for s, _ in first]]
    return [(sym, statistics.median(r[i][1] for r in same)) for i, (sym, _) in enumerate(first)]


def _op_name(symbol: str) -> str | None:
    """`kiln.ref.softmax.<hash>` (a reference kernel) -> kiln.softmax."""
    if symbol.startswith("kiln.ref."):
        return "kiln." + symbol.split(".")[2]
    return None


def attribute(module: Any, calls: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Each non-builtin call as {symbol, us, group | op_index}; op_index counts the entry
    function's kiln ops other than params and constants (the report's node order)."""
    from xdsl.dialects import func

    from backends.tvm.groups import plan_steps
    from ir import entry_function, kiln_ops

    fn = entry_function(module)
    order = {op: k for k, op in enumerate(o for o in kiln_ops(fn) if o.name not in ("kiln.param", "kiln.constant"))}
    steps = [s for s in plan_steps(fn.body.block) if not isinstance(s[0], func.ReturnOp)]
    names = [{op.name for op in s} for s in steps]
    gids = [s[0].attributes["group"].value.data if "group" in s[0].attributes else None for s in steps]
    used: list[set[str]] = [set() for _ in steps]
    out: list[dict[str, Any]] = []
    at = 0
    for symbol, seconds in calls:
        if symbol.startswith(BUILTIN):
            continue
        row: dict[str, Any] = {"symbol": symbol, "us": seconds * 1e6}
        j = _match(symbol, at, steps, names, gids, used)
        if j is not None:
            at = j
            used[j].add(_kind(symbol))
            if gids[j] is not None:
                row["group"] = gids[j]
            else:
                row["op_index"] = order.get(steps[j][0])
        out.append(row)
    return out


def _kind(symbol: str) -> str:
    return next((prefix for prefix, _ in NAMED_KERNELS if symbol.startswith(prefix)), "tir")


def _match(symbol: str, at: int, steps: list, names: list[set[str]], gids: list, used: list[set[str]]) -> int | None:
    if symbol.startswith("kiln_group_"):
        gid = symbol.removeprefix("kiln_group_")
        exact = next((j for j in range(at, len(steps)) if str(gids[j]) == gid and "tir" not in used[j]), None)
        if exact is not None:
            return exact
    kind = _kind(symbol)
    wanted = dict(NAMED_KERNELS).get(kind)
    ref = _op_name(symbol)
    if ref is not None:
        wanted = frozenset({ref})
    for j in range(at, len(steps)):
        if kind in used[j]:
            continue
        if wanted is not None and names[j] & wanted:
            return j
        if wanted is None and _runs_tir(names[j], used[j]):
            return j
    return None


def _runs_tir(names: set[str], used: set[str]) -> bool:
    """Whether a step still has ops for a TIR kernel: not those its named kernels ran, and
    not a lone reshape (a view: the VM's builtin, no kernel)."""
    covered = set(VIEWS).union(*(dict(NAMED_KERNELS)[k] for k in used if k != "tir"))
    return bool(names - covered)
