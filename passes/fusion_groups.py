"""Candidate fused groups: connected, convex sets of ops that a backend can emit as one kernel.

What a backend can fuse is declared by the backend and reaches the pass as options
(`FusionRules`): whether a contraction may take an elementwise epilogue (a Triton GEMM can;
a BLAS call from TVM cannot), and whether several reductions may share a kernel.

Enumeration is ESU (Wernicke's algorithm): every connected set of at most `max_group`
fusible ops is produced exactly once, rooted at its lowest index. Rules that only get
worse as a set grows (an opaque op, a second contraction) prune the search early.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from passes.fusion_graph import FusionGraph


@dataclass(frozen=True)
class FusionRules:
    max_group: int = 8
    fuse_contractions: bool = False  # a contraction may absorb its elementwise epilogue
    multi_reduction: bool = True  # several reductions (e.g. a hand-written rms_norm) in one kernel
    max_candidates: int = 200_000


class CandidateLimit(Exception):
    """Enumeration produced more than `max_candidates`; the caller shrinks `max_group`."""


def fusible(graph: FusionGraph, i: int, rules: FusionRules) -> bool:
    kind = graph.kinds[i]
    if kind in ("opaque", "attention"):
        return False
    return kind != "contraction" or rules.fuse_contractions


def is_valid(
    graph: FusionGraph, group: frozenset[int], rules: FusionRules, relax: list[bool] | None = None
) -> bool:
    """Can one kernel compute `group`? Singletons always can.

    With `relax` (ops that may be recomputed), an op of the group marked there that has a
    reader inside the group may be a copy that feeds only the group: convexity is judged
    without its edges out. Whether the copy really stays private is the solver's choice;
    groups that then cannot be ordered are cut by `fusion_order.py`."""
    if len(group) == 1:
        return True
    if len(group) > rules.max_group or not all(fusible(graph, i, rules) for i in group):
        return False
    kinds = [graph.kinds[i] for i in group]
    contractions = [i for i in group if graph.kinds[i] == "contraction"]
    reductions = kinds.count("reduction")
    if len(contractions) > 1 or (contractions and reductions):
        return False
    if reductions > 1 and not rules.multi_reduction:
        return False
    if contractions and not _is_epilogue(graph, contractions[0], group):
        return False
    return graph.is_convex(group, sealed(graph, group, relax) if relax else frozenset())


def sealed(graph: FusionGraph, group: frozenset[int], relax: list[bool]) -> frozenset[int]:
    """The ops of `group` that may be private copies: recomputable, read inside it, and
    cheaper to make here than to load, i.e. the inputs it adds to the group (those no other
    member reads or makes) are smaller than its result: a broadcast, an expand, a slice, or
    an op on what the group loads anyway. A looser test (say, up to twice the result, as
    a copy can also spare its value's write) admits copies that only trade bytes, e.g. a
    residual add recomputed in the next block, and the ILP stalls on the ties."""
    out = []
    for i in group:
        if not (relax[i] and graph.succs[i] & group):
            continue
        loaded = set().union(*(graph.reads[j] | graph.writes[j] for j in group if j != i))
        extra = sum(graph.value_bytes[v] for v in graph.reads[i] - loaded)
        if extra < sum(graph.value_bytes[v] for v in graph.writes[i]):
            out.append(i)
    return frozenset(out)


def _is_epilogue(graph: FusionGraph, anchor: int, group: frozenset[int]) -> bool:
    """Every other op of the group is downstream of the contraction (no fused prologue)."""
    reached, frontier = {anchor}, [anchor]
    while frontier:
        for s in graph.succs[frontier.pop()]:
            if s in group and s not in reached:
                reached.add(s)
                frontier.append(s)
    return reached == set(group)


def enumerate_candidates(
    graph: FusionGraph, rules: FusionRules, deadline: float | None = None, relax: list[bool] | None = None
) -> list[frozenset[int]]:
    """All valid groups: every singleton plus every valid connected set up to max_group
    (`relax`: see `is_valid`).

    Raises `CandidateLimit` past `max_candidates` groups or past `deadline`
    (time.perf_counter()), so the caller can shrink the search and say so.
    """
    ok = [fusible(graph, i, rules) for i in range(len(graph))]
    adjacency = [tuple(sorted(u for u in graph.neighbors(i) if ok[u])) for i in range(len(graph))]
    out = [frozenset([i]) for i in range(len(graph))]
    for root in range(len(graph)):
        if not ok[root]:
            continue
        if deadline is not None and time.perf_counter() > deadline:
            raise CandidateLimit("candidate enumeration ran past the time limit")
        for group in _esu(graph, root, rules, adjacency):
            if len(group) > 1 and is_valid(graph, group, rules, relax):
                out.append(group)
                if len(out) > rules.max_candidates:
                    raise CandidateLimit(f"more than {rules.max_candidates} candidate groups")
    return out


def _esu(
    graph: FusionGraph, root: int, rules: FusionRules, adjacency: list[tuple[int, ...]]
) -> Iterator[frozenset[int]]:
    kinds = graph.kinds

    def extend(sub: frozenset[int], ext: set[int], around: set[int], anchors: int) -> Iterator[frozenset[int]]:
        yield sub
        if len(sub) >= rules.max_group:
            return
        ext = set(ext)
        while ext:
            w = ext.pop()
            grown = anchors + _anchor_weight(kinds[w])
            if _anchors_invalid(grown, rules):
                continue  # every superset is invalid too: prune the whole subtree
            new = {u for u in adjacency[w] if u > root and u not in sub and u not in around}
            yield from extend(sub | {w}, ext | new, around | new | {w}, grown)

    start = {u for u in adjacency[root] if u > root}
    yield from extend(frozenset([root]), start, start | {root}, _anchor_weight(kinds[root]))


# Anchors packed in one int: contractions count in the tens, reductions in the units.
def _anchor_weight(kind: str) -> int:
    return 10 if kind == "contraction" else 1 if kind == "reduction" else 0


def _anchors_invalid(weight: int, rules: FusionRules) -> bool:
    contractions, reductions = divmod(weight, 10)
    return contractions > 1 or (contractions and reductions) or (reductions > 1 and not rules.multi_reduction)
