"""Buffer lifetimes from program order after fusion: what needs memory, and when.

A fused group runs as one kernel, so only values that leave their group (read by another
group, in a later step) are materialized; a value used only inside its group lives in
registers or the kernel's scratch and needs no buffer. Steps are the groups in the order
every runtime executes them: repeatedly the ready group whose first op comes earliest (the
order of `backends/tvm/groups.plan_steps` and Triton's `read_groups`). An op without a
`group` attribute is a step of its own, so an unfused program plans op by op.

A buffer lives over the closed interval [producer step, last consumer step]: a kernel
reads its inputs while it writes its outputs, so inputs and outputs of one step overlap
(no in-place reuse is assumed). Function arguments, parameters, constants and returned
values are not planned: they belong to the caller (returned values must outlive the call,
so they cannot sit in an arena that the next call reuses).

Sizes are rounded up to `ALIGN` bytes, so every offset in the arena is aligned for any
dtype and for SIMD loads; the planners work in these units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from ir import dtypes
from ir.core import Elementwise
from ir.steps import StepCycleError, run_order

ALIGN = 64  # bytes; one cache line, the widest SIMD load
SOURCE_OPS = ("kiln.param", "kiln.constant")
VIEW_OPS = ("kiln.reshape",)  # ops every runtime runs as a view of their input


@dataclass(frozen=True)
class Buffer:
    """One planned value: `size` in ALIGN units, live over steps [start, end]."""

    index: int
    size: int
    start: int
    end: int
    nbytes: int = 0  # the value's exact bytes (size * ALIGN rounds it up)
    name: str = ""

    def overlaps(self, other: Buffer) -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class Lifetimes:
    """The buffers of one function, plus the weights and values the planner leaves alone."""

    buffers: list[Buffer]
    num_steps: int
    values: list[SSAValue] = field(default_factory=list)  # buffer index -> IR value
    steps: list[list[Operation]] = field(default_factory=list)  # ops of each step, in order
    weights: list[tuple[SSAValue, int, int]] = field(default_factory=list)  # (value, bytes, reads)
    returned_bytes: int = 0
    internal_values: int = 0  # values that stay inside their fused group: no buffer
    aliases: dict[SSAValue, int] = field(default_factory=dict)  # written in place: value -> buffer

    def max_live(self) -> int:
        """The largest total size live at one step: no arena can be smaller (ALIGN units)."""
        return max_live(self.buffers, self.num_steps)

    def conflicts(self) -> list[tuple[int, int]]:
        """Pairs (i, j), i < j, of buffers live at a common step."""
        return conflicts(self.buffers)


def max_live(buffers: list[Buffer], num_steps: int | None = None) -> int:
    if not buffers:
        return 0
    steps = num_steps if num_steps is not None else max(b.end for b in buffers) + 1
    delta = [0] * (steps + 1)
    for b in buffers:
        delta[b.start] += b.size
        delta[b.end + 1] -= b.size
    best = live = 0
    for d in delta:
        live += d
        best = max(best, live)
    return best


def live_per_step(buffers: list[Buffer], num_steps: int) -> list[list[int]]:
    """Indices of the buffers live at each step."""
    live: list[list[int]] = [[] for _ in range(num_steps)]
    for b in buffers:
        for t in range(b.start, b.end + 1):
            live[t].append(b.index)
    return live


def conflicts(buffers: list[Buffer]) -> list[tuple[int, int]]:
    """Sweep by start step: only intervals that intersect are paired."""
    order = sorted(buffers, key=lambda b: (b.start, b.end))
    pairs: list[tuple[int, int]] = []
    active: list[Buffer] = []
    for b in order:
        active = [a for a in active if a.end >= b.start]
        pairs.extend((min(a.index, b.index), max(a.index, b.index)) for a in active)
        active.append(b)
    return sorted(pairs)


def group_key(op: Operation, position: int) -> tuple[str, int]:
    attr = op.attributes.get("group") or op.properties.get("group")
    return ("g", attr.value.data) if attr is not None else ("op", position)  # type: ignore[union-attr]


def execution_steps(fn: func.FuncOp) -> list[list[Operation]]:
    """The function's compute ops grouped into steps, in the runtimes' execution order."""
    ops = [op for op in fn.body.block.ops if op.name.startswith("kiln.") and op.name not in SOURCE_OPS]
    members: dict[tuple[str, int], list[Operation]] = {}
    for i, op in enumerate(ops):
        members.setdefault(group_key(op, i), []).append(op)
    groups = list(members.values())  # program order of each step's first op
    try:  # the TVM backend's order (`backends/tvm/groups.plan_steps` asks the same function)
        return [groups[k] for k in run_order(groups)]
    except StepCycleError as err:
        raise ValueError(f"map-memory: {err}") from None


def lifetimes(fn: func.FuncOp, steps: list[list[Operation]] | None = None, in_place: bool = True) -> Lifetimes:
    """Buffers of `fn` for the given step order (default: `execution_steps(fn)`).

    A reshape that is a step of its own is a view in every runtime (TVM lowers it to
    `R.reshape`, torch to `view`): it gets no buffer, and the buffer it views lives until
    the reshape's own readers are done. An elementwise step may write its output over an
    input that dies there (`_in_place`).
    """
    steps = execution_steps(fn) if steps is None else steps
    step_of = {op: t for t, ops in enumerate(steps) for op in ops}
    returned = set(fn.body.block.last_op.operands) if fn.body.block.last_op else set()
    spans: list[list[int]] = []  # [size, start, end, nbytes] per buffer
    names: list[str] = []
    values: list[SSAValue] = []
    root: dict[SSAValue, int | None] = {}  # a view -> the buffer it reads (None: not planned)
    buffer_of: dict[SSAValue, int] = {}
    internal = 0
    returned_bytes = 0
    for t, ops in enumerate(steps):
        for op in ops:
            for r in op.results:
                nbytes = dtypes.nbytes(r.type)
                if r in returned:
                    returned_bytes += nbytes
                    continue
                readers = [step_of[u.operation] for u in r.uses if u.operation in step_of]
                outside = [s for s in readers if s != t]
                if readers and not outside:
                    internal += 1
                    continue
                end = max(outside, default=t)
                if len(ops) == 1 and op.name in VIEW_OPS:
                    source = op.operands[0]
                    base = buffer_of.get(source, root.get(source))
                    root[r] = base
                    if base is not None:
                        spans[base][2] = max(spans[base][2], end)
                    continue
                buffer_of[r] = len(spans)
                spans.append([-(-max(nbytes, 1) // ALIGN), t, end, nbytes])
                names.append(_name(op, r))
                values.append(r)
    merged = _in_place(steps, spans, values, buffer_of) if in_place else {}
    keep = [i for i in range(len(spans)) if i not in merged]
    index = {old: new for new, old in enumerate(keep)}
    buffers = [Buffer(index[i], *_span(spans[i]), names[i]) for i in keep]
    aliases = {values[i]: index[target] for i, target in merged.items()}
    values = [values[i] for i in keep]
    weights = []
    for op in fn.body.block.ops:
        if op.name in SOURCE_OPS:
            r = op.results[0]
            weights.append((r, dtypes.nbytes(r.type), sum(1 for _ in r.uses)))
    return Lifetimes(buffers, len(steps), values, steps, weights, returned_bytes, internal, aliases)


def _span(span: list[int]) -> tuple[int, int, int, int]:
    size, start, end, nbytes = span
    return size, start, end, nbytes


def _in_place(steps, spans: list[list[int]], values: list[SSAValue], buffer_of: dict) -> dict[int, int]:
    """Buffers written in place over an input: buffer -> the buffer whose bytes it reuses.

    Allowed when every op of the step is elementwise, the step has one buffer output and
    its last op makes it, and an input of the same shape and bytes is last read at this
    step: each element is then read before the same element is written, in one kernel
    (TVM, Triton) or before the output is stored (the interpreter copies after the op).
    """
    owner: dict[int, int] = {}  # merged buffer -> target

    def find(i: int) -> int:
        while i in owner:
            i = owner[i]
        return i

    produced = {v: i for i, v in enumerate(values)}
    for t, ops in enumerate(steps):
        outs = [produced[r] for op in ops for r in op.results if r in produced]
        if len(outs) != 1 or not all(op.has_trait(Elementwise) for op in ops):
            continue
        out = outs[0]
        value = values[out]
        if value.owner is not ops[-1]:
            continue
        inside = set(ops)
        for op in ops:
            for x in op.operands:
                if x in buffer_of and x.owner not in inside and x.type == value.type:
                    target = find(buffer_of[x])
                    if target != out and spans[target][2] == t and spans[target][0] == spans[out][0]:
                        owner[out] = target
                        spans[target][2] = max(spans[target][2], spans[out][2])
                        break
            if out in owner:
                break
    return {i: find(i) for i in owner}


def _name(op: Operation, r: SSAValue) -> str:
    return f"{op.name.removeprefix('kiln.')}#{r.index}" if len(op.results) > 1 else op.name.removeprefix("kiln.")
