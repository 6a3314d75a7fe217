"""The baseline the solver must beat: Inductor-style greedy fusion.

Start from one group per op and repeatedly merge the pair of adjacent groups whose merge
saves the most modeled time, as long as the merged group is valid (same rules as the
solver's candidates), until no merge saves anything. A heap with lazy invalidation keeps
this near-linear in the number of edges.
"""

from __future__ import annotations

import heapq

from passes.fusion_graph import FusionGraph
from passes.fusion_groups import FusionRules, is_valid


def greedy_groups(graph: FusionGraph, rules: FusionRules) -> list[frozenset[int]]:
    group_of = list(range(len(graph)))
    members: dict[int, frozenset[int]] = {i: frozenset([i]) for i in range(len(graph))}
    cost: dict[int, float] = {i: graph.cost(members[i]) for i in members}
    version: dict[int, int] = {i: 0 for i in members}
    heap: list[tuple[float, int, int, int, int]] = []

    def push_pairs(g: int) -> None:
        for i in members[g]:
            for n in graph.neighbors(i):
                h = group_of[n]
                if h == g:
                    continue
                merged = members[g] | members[h]
                if not is_valid(graph, merged, rules):
                    continue
                saving = cost[g] + cost[h] - graph.cost(merged)
                if saving > 0:
                    heapq.heappush(heap, (-saving, g, h, version[g], version[h]))

    for g in list(members):
        push_pairs(g)
    while heap:
        _, g, h, vg, vh = heapq.heappop(heap)
        if g not in members or h not in members or version[g] != vg or version[h] != vh:
            continue
        merged = members.pop(g) | members.pop(h)
        new = min(g, h)
        members[new] = merged
        cost[new] = graph.cost(merged)
        version[new] = max(vg, vh) + 1
        for i in merged:
            group_of[i] = new
        push_pairs(new)
    return sorted(members.values(), key=min)
