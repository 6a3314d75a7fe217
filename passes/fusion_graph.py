"""The function as the fusion pass sees it: ops by index, their kinds, and fast group costs.

Costing tens of thousands of candidate groups through xDSL objects would dominate compile
time, so each op's FLOPs, the values it reads and writes (with byte sizes) and its
consumers are flattened into arrays once. `cost(group)` then applies the roofline model
(`cost_models.roofline`, same definition) with set arithmetic on small integers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.ir import Operation

from cost_models.hardware import Hardware
from cost_models.roofline import roofline_seconds
from ir import dtypes
from ir.core import Contraction, DataMovement, Elementwise, Reduction, Routing

ANCHOR_KINDS = ("reduction", "contraction", "attention")


def op_kind(op: Operation) -> str:
    """elementwise | movement | reduction | contraction | attention | opaque."""
    if op.name == "kiln.attention":
        return "attention"
    if op.name == "kiln.embedding" or op.has_trait(Routing):
        return "opaque"
    if op.has_trait(Contraction):
        return "contraction"
    if op.has_trait(Reduction):
        return "reduction"
    if op.has_trait(Elementwise) or op.name == "kiln.batch_norm":
        return "elementwise"
    if op.has_trait(DataMovement):
        return "movement"
    return "opaque"


@dataclass
class FusionGraph:
    ops: list[Operation]
    kinds: list[str]
    flops: list[int]
    reads: list[frozenset[int]]  # value ids each op reads
    writes: list[frozenset[int]]  # value ids each op produces
    value_bytes: dict[int, int]
    value_readers: dict[int, frozenset[int]]  # value id -> op indices reading it
    returned: frozenset[int]  # value ids returned by the function
    preds: list[frozenset[int]]  # op index -> producer op indices
    succs: list[frozenset[int]]
    hw: Hardware
    tables: dict[int, int]  # embedding op index -> value id of its table

    @staticmethod
    def build(fn: func.FuncOp, hw: Hardware) -> FusionGraph:
        ops = [op for op in fn.body.block.ops if op.name.startswith("kiln.") and op.name not in ("kiln.param", "kiln.constant")]
        index = {op: i for i, op in enumerate(ops)}
        ids: dict[object, int] = {}

        def vid(value) -> int:
            return ids.setdefault(value, len(ids))

        reads, writes, value_bytes, readers = [], [], {}, {}
        preds: list[set[int]] = [set() for _ in ops]
        succs: list[set[int]] = [set() for _ in ops]
        for i, op in enumerate(ops):
            r = set()
            for operand in op.operands:
                v = vid(operand)
                r.add(v)
                value_bytes[v] = dtypes.nbytes(operand.type)
                readers.setdefault(v, set()).add(i)
                owner = operand.owner
                if isinstance(owner, Operation) and owner in index:
                    preds[i].add(index[owner])
                    succs[index[owner]].add(i)
            reads.append(frozenset(r))
            w = set()
            for result in op.results:
                v = vid(result)
                w.add(v)
                value_bytes[v] = dtypes.nbytes(result.type)
            writes.append(frozenset(w))
        ret = next(op for op in fn.body.block.ops if isinstance(op, func.ReturnOp))
        returned = frozenset(ids[v] for v in ret.operands if v in ids)
        return FusionGraph(
            ops=ops,
            kinds=[op_kind(op) for op in ops],
            flops=[op.flops() for op in ops],  # type: ignore[attr-defined]
            reads=reads,
            writes=writes,
            value_bytes=value_bytes,
            value_readers={v: frozenset(s) for v, s in readers.items()},
            returned=returned,
            preds=[frozenset(p) for p in preds],
            succs=[frozenset(s) for s in succs],
            hw=hw,
            tables={i: vid(op.operands[0]) for i, op in enumerate(ops) if op.name == "kiln.embedding"},
        )

    def __len__(self) -> int:
        return len(self.ops)

    # ---- costs ------------------------------------------------------------------------
    def bytes_moved(self, group: Iterable[int]) -> int:
        members = set(group)
        produced: set[int] = set()
        for i in members:
            produced |= self.writes[i]
        written = {
            v for v in produced
            if v in self.returned or not self.value_readers.get(v, frozenset()) <= members
        }
        return self.bytes_read(members) + sum(self.value_bytes[v] for v in written)

    def bytes_read(self, members: set[int] | frozenset[int]) -> int:
        """Bytes of the values the group reads from outside itself (its own results stay on chip)."""
        read: set[int] = set()
        for i in members:
            read |= self.reads[i]
        for i in members:
            read -= self.writes[i]
        return sum(self._read_bytes(v, set(members)) for v in read)

    def _read_bytes(self, v: int, members: set[int]) -> int:
        """An embedding table is read only at the gathered rows."""
        users = self.value_readers[v] & members
        if users and all(self.tables.get(i) == v for i in users):
            return sum(dtypes.nbytes(self.ops[i].results[0].type) for i in users)
        return self.value_bytes[v]

    def cost(self, group: Iterable[int]) -> float:
        members = list(group)
        return roofline_seconds(sum(self.flops[i] for i in members), self.bytes_moved(members), self.hw)

    # ---- structure --------------------------------------------------------------------
    def is_convex(self, group: frozenset[int], sealed: frozenset[int] = frozenset()) -> bool:
        """No path leaves the group and re-enters it (so it can run as one kernel).

        Paths that start at a `sealed` op are ignored: a recomputed copy feeds only its own
        group (its original, elsewhere, feeds the rest), so it opens no path out."""
        top = max(group)
        frontier = [s for i in group - sealed for s in self.succs[i] if s not in group and s < top]
        seen = set(frontier)
        while frontier:
            node = frontier.pop()
            for s in self.succs[node]:
                if s in group:
                    return False
                if s < top and s not in seen:
                    seen.add(s)
                    frontier.append(s)
        return True

    def neighbors(self, i: int) -> frozenset[int]:
        return self.preds[i] | self.succs[i]
