"""Recompute in `fuse`: a cheap producer may run in several kernels instead of round-tripping memory.

Why: under set partitioning (`fusion.py`) a value must be written whenever any reader sits
in another kernel, and read back there. When the value is cheap to make from what the
other kernel can read instead (a broadcast of a small row, a cast, a scale), computing it
again inside each consumer kernel moves fewer bytes. This file states that choice as an
ILP that is exact for the roofline cost, and rewrites the IR to the chosen cover.

The rules (the brute-force test in tests/passes/test_fusion.py enumerates exactly these):
1. Candidates are the same connected, convex groups as without recompute; with
   `relax-convexity`, also groups convex but for edges out of copies (`fusion_groups.sealed`).
2. A non-recomputable op is in exactly one chosen group; a recomputable one (`recomputable`:
   pure elementwise or movement, one result) in at least one.
3. An op in more than one chosen group must be read inside every group that holds it: a copy
   that nothing in its kernel reads would be computed for nothing.
4. A copy reads an operand from its own group when the group holds the producer, else
   from memory; a value read from memory, or returned, is written by some chosen group
   holding its producer (any copy may be the one that writes it).
5. A group's time is the roofline time of its flops and bytes moved: what it reads from
   outside plus what it writes.
6. The chosen groups, with each value read from its writer, can be ordered (no cycle);
   this one is enforced lazily (`fusion_order.py`, `CoverModel.cut`).

The ILP, with x_g (group chosen), w_gv (group g writes value v), y_v (v is in memory),
t_g (time of g, continuous):
- coverage rows per rule 2; for a recomputable op P and a group h that reads P inside,
  x_h + sum(x_g: g holds P but does not read it) <= 1 (rule 3);
- w_gv = x_g when g must write v (the producer is in no other group and a reader is outside,
  or nothing in g reads it), 0 <= w_gv <= x_g when it may, absent when nobody could need it;
- x_h <= y_v for each group h that reads v without holding its producer, y_v <= sum_g w_gv,
  y_v = 1 for a returned value (rule 4). Pairs where both producer and reader are
  non-recomputable are left out: there the producer's single group must write v anyway;
- t_g >= (F_g / peak + launch) x_g and t_g >= ((R_g + forced writes) / bw + launch) x_g +
  sum(bytes_v / bw * w_gv): with t_g minimized this is max(compute, memory) + launch, which
  is `cost_models.roofline.roofline_seconds` exactly.
Without recompute every op is non-recomputable and this reduces to set partitioning.
Ops that no valid cover could hold twice (`may_recompute`) are treated as
non-recomputable from the start, which changes no optimum and shrinks the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from xdsl.dialects.builtin import IntegerAttr, i64
from xdsl.ir import Operation
from xdsl.traits import Pure

from cost_models.ilp import INF, IntegerProgram, Solution, solve
from cost_models.roofline import roofline_seconds
from passes.fusion_graph import FusionGraph
from passes.fusion_order import find_cycle

RECOMPUTABLE_KINDS = ("elementwise", "movement")
US = 1e6  # microseconds keep HiGHS's tolerances meaningful
# Launch overhead dominates small groups, so one kernel's worth of bytes can be 1e-5 of the
# objective: HiGHS's default 1e-4 gap would call a worse cover optimal.
REL_GAP = 1e-9
# HiGHS's presolve of a dense cover model does not stop at its time limit: a 31-op integer
# graph (floor divisions sharing two casts, 1954 candidates) built 948k nonzeros and took
# 25 s against a 9 s limit. The models of the zoo and the real-model suite stay under 12k
# (gpt 11k, 0.12 s); above this the partition stands and the report says why.
MAX_COVER_NONZEROS = 200_000


def recomputable(graph: FusionGraph, i: int) -> bool:
    op = graph.ops[i]
    return graph.kinds[i] in RECOMPUTABLE_KINDS and op.has_trait(Pure) and len(op.results) == 1


def may_recompute(graph: FusionGraph) -> list[bool]:
    """The recomputable ops that some valid cover could hold twice; the model treats the rest
    as non-recomputable, which loses nothing and keeps it small.

    By rule 3 a second copy of P needs a second copy of a reader of P: P has two readers,
    or one reader that is itself held twice. Ops come in program order, so one backward
    sweep settles it.
    """
    out = [False] * len(graph)
    for i in reversed(range(len(graph))):
        readers = graph.succs[i]
        out[i] = recomputable(graph, i) and (len(readers) > 1 or any(out[u] for u in readers))
    return out


@dataclass
class Cover:
    """Chosen groups (recomputed ops appear in several) and, per op, the group that keeps the
    original op; its other groups get clones. Bytes and seconds are per group, as chosen."""

    groups: list[frozenset[int]]
    home: dict[int, int]
    bytes: list[int]
    seconds: list[float]
    chosen: list[int]  # candidate index of each group

    @property
    def recomputed(self) -> int:
        return sum(len(g) for g in self.groups) - len(self.home)


@dataclass
class CoverModel:
    graph: FusionGraph
    candidates: list[frozenset[int]]
    program: IntegerProgram = field(default_factory=IntegerProgram)
    x: list[int] = field(default_factory=list)
    t: list[int | None] = field(default_factory=list)  # None: the group's time is x's cost
    writes: list[dict[int, int]] = field(default_factory=list)  # group -> value -> w var (or x)
    read_bytes: list[int] = field(default_factory=list)
    y: dict[int, int] = field(default_factory=dict)  # value -> "in memory" var
    needs: dict[int, list[int]] = field(default_factory=dict)  # value -> x of groups reading it from memory

    @staticmethod
    def build(graph: FusionGraph, candidates: list[frozenset[int]], recompute: bool = True) -> CoverModel:
        model = CoverModel(graph, candidates)
        rec = may_recompute(graph) if recompute else [False] * len(graph)
        producer = {v: i for i in range(len(graph)) for v in graph.writes[i]}
        p = model.program
        writers: dict[int, list[int]] = {}
        needs = model.needs
        for g in candidates:
            x = p.add_var(0.0)
            model.x.append(x)
            model.read_bytes.append(graph.bytes_read(g))
            w: dict[int, int] = {}
            for i in g:
                for v in graph.writes[i]:
                    kind = _write_kind(graph, rec, g, i, v)
                    if kind != "never":
                        w[v] = x if kind == "must" else p.add_var(0.0)
                        writers.setdefault(v, []).append(w[v])
                for v in graph.reads[i]:
                    src = producer.get(v)
                    if src is not None and src not in g and (rec[src] or rec[i]):
                        readers = needs.setdefault(v, [])
                        if not readers or readers[-1] != x:  # one row per group, however many ops read v
                            readers.append(x)
            model.writes.append(w)
            model._time(len(model.x) - 1)
        model._coverage(rec)
        for v in set(needs) | {v for v in graph.returned if v in producer and rec[producer[v]]}:
            y = model.y[v] = p.add_var(0.0, lower=1.0 if v in graph.returned else 0.0)
            for x in needs.get(v, ()):
                p.add_constraint({x: 1.0, y: -1.0}, upper=0.0)
            row = {y: 1.0}
            for var in writers.get(v, ()):
                row[var] = row.get(var, 0.0) - 1.0
            p.add_constraint(row, upper=0.0)
        return model

    def _time(self, j: int) -> None:
        """t_j = roofline time of group j with its chosen writes (the epigraph in the module
        docstring); a group whose writes are all fixed needs no t: its time is x's cost."""
        p, graph, x, w = self.program, self.graph, self.x[j], self.writes[j]
        fixed = {v for v, var in w.items() if var == x}
        if len(fixed) == len(w):
            p.costs[x] = self._seconds(j, fixed) * US
            self.t.append(None)
            return
        t = p.add_var(1.0, upper=INF, integer=False)
        self.t.append(t)
        flops = sum(graph.flops[i] for i in self.candidates[j])
        memory = self.read_bytes[j] + sum(graph.value_bytes[v] for v in fixed)
        p.add_constraint({t: 1.0, x: -roofline_seconds(flops, 0, graph.hw) * US}, lower=0.0)
        row = {t: 1.0, x: -roofline_seconds(0, memory, graph.hw) * US}
        for v, var in w.items():
            if var != x:
                row[var] = -graph.value_bytes[v] / graph.hw.mem_bandwidth * US
                p.add_constraint({var: 1.0, x: -1.0}, upper=0.0)
        p.add_constraint(row, lower=0.0)

    def _coverage(self, rec: list[bool]) -> None:
        graph, p = self.graph, self.program
        holding: list[list[int]] = [[] for _ in range(len(graph))]
        for j, g in enumerate(self.candidates):
            for i in g:
                holding[i].append(j)
        for i, js in enumerate(holding):
            p.add_constraint({self.x[j]: 1.0 for j in js}, 1.0, INF if rec[i] else 1.0)
            if not rec[i]:
                continue
            readers = graph.succs[i]
            idle = [self.x[j] for j in js if not readers & self.candidates[j]]
            if idle:
                p.add_constraint({x: 1.0 for x in idle}, upper=1.0)
            for j in js if idle else ():
                if readers & self.candidates[j]:
                    p.add_constraint({self.x[j]: 1.0, **{x: 1.0 for x in idle}}, upper=1.0)

    def start_from(self, groups: list[frozenset[int]]) -> list[float]:
        """A feasible point for a set partition (each group writes what others read): the
        incumbent HiGHS starts from, so recompute can only improve on it."""
        chosen = set(groups)
        values = [0.0] * self.program.num_vars
        for j, g in enumerate(self.candidates):
            if g not in chosen:
                continue
            values[self.x[j]] = 1.0
            written = {v for v in self.writes[j] if self._escapes(g, v)}
            for v in written:
                values[self.writes[j][v]] = 1.0
            if self.t[j] is not None:
                values[self.t[j]] = self._seconds(j, written) * US
        for v, y in self.y.items():
            needed = v in self.graph.returned or any(values[x] > 0.5 for x in self.needs.get(v, ()))
            values[y] = 1.0 if needed else 0.0
        return values

    def _escapes(self, g: frozenset[int], v: int) -> bool:
        return v in self.graph.returned or not self.graph.value_readers.get(v, frozenset()) <= g

    def _seconds(self, j: int, written: set[int]) -> float:
        g = self.candidates[j]
        moved = self.read_bytes[j] + sum(self.graph.value_bytes[v] for v in written)
        return roofline_seconds(sum(self.graph.flops[i] for i in g), moved, self.graph.hw)

    def cut(self, cover: Cover, cycle: list[tuple[int, int, int]]) -> None:
        """Forbid this cycle: its groups chosen together with these writers of its values."""
        row: dict[int, float] = {}
        for reader, writer, v in cycle:
            j = cover.chosen[writer]
            for var in (self.x[cover.chosen[reader]], self.x[j], self.writes[j].get(v, self.x[j])):
                row[var] = row.get(var, 0.0) + 1.0
        self.program.add_constraint(row, upper=sum(row.values()) - 1.0)

    def cover(self, solution: Solution) -> Cover:
        values = solution.values
        chosen = [j for j in range(len(self.candidates)) if values[self.x[j]] > 0.5]
        groups = [self.candidates[j] for j in chosen]
        written = [{v for v, var in self.writes[j].items() if values[var] > 0.5} for j in chosen]
        home: dict[int, int] = {}  # the original op stays where its value is written, if anywhere
        for k, g in enumerate(groups):
            for i in g:
                values = self.graph.writes[i]
                if i not in home or (values & written[k] and not values & written[home[i]]):
                    home[i] = k
        moved = [self.read_bytes[j] + sum(self.graph.value_bytes[v] for v in w)
                 for j, w in zip(chosen, written)]
        seconds = [self._seconds(j, w) for j, w in zip(chosen, written)]
        return Cover(groups, home, moved, seconds, chosen)


def _write_kind(graph: FusionGraph, rec: list[bool], g: frozenset[int], i: int, v: int) -> str:
    """must | may | never: whether group g, holding producer i, writes value v."""
    readers = graph.value_readers.get(v, frozenset())
    inside = readers & g
    outside = bool(readers - g) or v in graph.returned
    if not inside:  # rule 3: a copy nothing reads is this op's only copy, so it writes v if anyone needs it
        return "must" if outside else "never"
    if not rec[i]:
        return "must" if outside else "may" if any(rec[u] for u in inside) else "never"
    return "may" if outside or any(rec[u] for u in inside) else "never"


def solve_cover(
    graph: FusionGraph, candidates: list[frozenset[int]], start: list[frozenset[int]], time_limit: float
) -> tuple[Cover | None, Solution, int, str]:
    """The cover ILP from the partition `start`, with cycles cut lazily (`fusion_order.py`).
    Returns (cover, last solution, cuts, status); cover is None, and status says why, when
    no solution could be ordered in time ("cyclic": the last one still had a cycle)."""
    deadline = time.perf_counter() + time_limit
    model = CoverModel.build(graph, candidates)
    nonzeros = sum(len(coeffs) for coeffs, _, _ in model.program.rows)
    if nonzeros > MAX_COVER_NONZEROS:
        skipped = Solution("skipped", None, None, None, (), 0.0)
        return None, skipped, 0, f"skipped: {nonzeros} nonzeros (> {MAX_COVER_NONZEROS}), the partition stands"
    initial = model.start_from(start)
    cuts = 0
    while True:
        left = max(0.1, deadline - time.perf_counter())
        solution = solve(model.program, time_limit=left, initial=initial, rel_gap=REL_GAP)
        if not solution.has_solution:
            return None, solution, cuts, solution.status
        cover = model.cover(solution)
        cycle = find_cycle(graph, cover.groups, cover.home)
        if cycle is None:
            return cover, solution, cuts, solution.status
        if time.perf_counter() > deadline:
            return None, solution, cuts, "cyclic"
        model.cut(cover, cycle)
        cuts += 1


def materialize(graph: FusionGraph, groups: list[frozenset[int]], home: dict[int, int]) -> int:
    """Give every op exactly one `group` attribute, cloning an op once per extra group.

    A clone sits just before its original and takes the same operands, except that an
    operand made inside the clone's group is taken from that group's copy; the original
    op, in its home group, likewise reads from its home group's copies. Returns the
    number of clones. Group ids are dense, in program order of each group's first op.
    """
    order = sorted(range(len(groups)), key=lambda k: sorted(groups[k]))
    index = {op: i for i, op in enumerate(graph.ops)}
    operands = {i: list(op.operands) for i, op in enumerate(graph.ops)}
    copies: dict[tuple[int, int], Operation] = {}
    for gid, k in enumerate(order):
        for i in sorted(groups[k]):
            op = graph.ops[i]
            if home[i] != k:
                clone = op.clone()
                op.parent_block().insert_op_before(clone, op)  # type: ignore[union-attr]
                op = clone
            op.attributes["group"] = IntegerAttr(gid, i64)
            copies[k, i] = op
    for (k, i), op in copies.items():
        new = []
        for value in operands[i]:
            src = index.get(value.owner)  # type: ignore[arg-type]
            inside = src is not None and src in groups[k]
            # type: ignore below: `src` is an op index here, and `value` an OpResult
            new.append(copies[k, src].results[value.index] if inside else value)  # type: ignore
        if new != list(op.operands):
            op.operands = new
    return len(copies) - len(graph.ops)
