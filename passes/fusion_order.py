"""Chosen fusion groups must run one after another: their dependency graph must be acyclic.

Convex groups do not guarantee it. Two groups can each feed the other without either
being non-convex: A = {a1, a2}, B = {b1, b2} with a1 -> b2 and b1 -> a2 (a path leaves A
and ends in B, never re-entering A). Backends then cannot order the kernels (TVM's
`plan_steps` refuses). Forbidding this up front would take a variable per ordering, so the
solvers cut it lazily instead: solve, look for a cycle here, forbid exactly that
combination of chosen groups (and of who writes the values on the cycle), solve again.
"""

from __future__ import annotations

from itertools import pairwise

from passes.fusion_graph import FusionGraph


def find_cycle(
    graph: FusionGraph, groups: list[frozenset[int]], home: dict[int, int]
) -> list[tuple[int, int, int]] | None:
    """A cycle as edges (reader group, writer group, value), or None if the groups can be ordered.

    Group k waits for group home[p] when some op of k reads a value of op p from memory
    (p not in k): `home` is the group that keeps the original p, the one that writes it.
    """
    producer = {v: i for i in range(len(graph)) for v in graph.writes[i]}
    deps: list[dict[int, int]] = [{} for _ in groups]
    for k, group in enumerate(groups):
        for i in group:
            for v in graph.reads[i]:
                p = producer.get(v)
                if p is not None and p not in group:
                    deps[k].setdefault(home[p], v)
    state = [0] * len(groups)  # 0 new, 1 on the stack, 2 done
    for root in range(len(groups)):
        if state[root]:
            continue
        stack = [(root, iter(deps[root].items()))]
        state[root] = 1
        while stack:
            k, edges = stack[-1]
            step = next(edges, None)
            if step is None:
                state[k] = 2
                stack.pop()
                continue
            h, v = step
            if state[h] == 1:  # back edge: the cycle is the stack from h up to k, then k -> h
                path = [s[0] for s in stack]
                ring = path[path.index(h):] + [h]
                return [(a, b, deps[a][b]) for a, b in pairwise(ring)]
            if state[h] == 0:
                state[h] = 1
                stack.append((h, iter(deps[h].items())))
    return None
