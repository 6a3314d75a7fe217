"""The model graph drawn by Graphviz `dot`: one box per op, one cluster per fused group.

Graphviz is the layout engine made for this picture (layered DAG layout with clusters: the
way TVM's Relay visualizer, torchviz and TensorBoard's graph dumps draw compute graphs),
so Kiln writes no layout code: it writes dot source with the `graphviz` package, runs
Debian's `dot -Tsvg` and inlines the SVG; the page's script only adds pan, zoom and search.
Fused groups are coloured clusters, recomputed ops have a double dashed border, and eager
fallback islands are red clusters.
"""

from __future__ import annotations

import re
import shutil

from compiler.report.graph import ModelGraph, Node

PALETTE = ("#dbeafe", "#dcfce7", "#fef9c3", "#ede9fe", "#cffafe", "#ffedd5", "#fce7f3", "#e0e7ff",
           "#ecfccb", "#f1f5f9")
FALLBACK_FILL = "#fecaca"
MAX_NODES = 5000
FALLBACK_LINE = "#b91c1c"


class GraphvizMissing(RuntimeError):
    pass


def node_label(n: Node) -> str:
    lines = [n.op, f"{n.shape} {n.dtype}".strip()]
    if n.quant:
        lines.append(n.quant[:40])
    if n.reuse is not None:
        lines.append(f"reuse {n.reuse}")
    return "\n".join(x for x in lines if x)


def node_tooltip(n: Node) -> str:
    parts = [f"op: {n.op}", f"shape: {n.shape or '-'}", f"dtype: {n.dtype or '-'}",
             f"group: {'-' if n.group is None else n.group}", f"format: {n.quant or 'fp32'}",
             f"kernel: {n.path or '-'}"]
    if n.partition is not None:
        parts.append(f"partition: {n.partition}")
    if n.recomputed:
        parts.append("recomputed in several groups")
    if n.reuse is not None:
        parts.append(f"reuse factor: {n.reuse}")
    parts.extend(f"{k}: {v}" for k, v in n.decisions.items())
    if n.name:
        parts.append(f"name: {n.name}")
    return "\n".join(parts)


def dot_source(graph: ModelGraph) -> str:
    """The dot program: clusters for fused groups and fallback islands, nodes, edges."""
    import graphviz

    dot = graphviz.Digraph("kiln", graph_attr={"rankdir": "TB", "fontname": "Helvetica", "nodesep": "0.2",
                                               "ranksep": "0.3", "bgcolor": "transparent"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                      "fontsize": "9", "fillcolor": "white", "margin": "0.06,0.03"},
                           edge_attr={"color": "#64748b", "arrowsize": "0.5"})
    in_cluster: set[str] = set()
    for part, gid in graph.groups():
        members = [n for n in graph.nodes if n.partition == part and n.group == gid]
        label = f"group {gid}" if len(graph.modules) <= 1 else f"p{part} group {gid}"
        with dot.subgraph(name=f"cluster_group_{part}_{gid}") as sub:
            sub.attr(label=label, style="filled,rounded", fillcolor=PALETTE[gid % len(PALETTE)], color="#94a3b8",
                     fontsize="9", id=f"group-p{part}-g{gid}")
            for n in members:
                _add_node(sub, n)
                in_cluster.add(n.id)
    for k, island in enumerate(graph.fallback_islands()):
        with dot.subgraph(name=f"cluster_fallback_{k}") as sub:
            sub.attr(label="eager fallback", style="filled,rounded", fillcolor=FALLBACK_FILL, color=FALLBACK_LINE,
                     fontcolor=FALLBACK_LINE, fontsize="9", id=f"fallback-{k}")
            for n in island:
                _add_node(sub, n)
                in_cluster.add(n.id)
    for n in graph.nodes:
        if n.id not in in_cluster:
            _add_node(dot, n)
    for src, dst in graph.edges:
        dot.edge(src, dst)
    return dot.source


def _add_node(g, n: Node) -> None:
    attrs = {"label": node_label(n), "tooltip": node_tooltip(n), "id": f"op-{n.id}"}
    if n.recomputed:
        attrs.update(style="rounded,filled,dashed", peripheries="2", color="#7c3aed")
    if n.partition is None:
        attrs.update(fillcolor="#fee2e2", color=FALLBACK_LINE, fontcolor=FALLBACK_LINE)
    g.node(n.id, **attrs)


def render_svg(graph: ModelGraph, timeout_s: float = 60.0) -> str:
    """Inline SVG (no XML prolog) of the graph; raises GraphvizMissing without `dot`."""
    import subprocess

    if shutil.which("dot") is None:
        raise GraphvizMissing("Graphviz `dot` is not installed (apt-get install graphviz): the graph is "
                              "listed as a table instead")
    if len(graph.nodes) > MAX_NODES:
        raise GraphvizMissing(f"{len(graph.nodes)} ops is more than the {MAX_NODES} the page draws (the layout "
                              "and the browser slow down): the ops are listed as a table instead")
    try:
        done = subprocess.run(["dot", "-Tsvg"], input=dot_source(graph).encode(), capture_output=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise GraphvizMissing(f"dot took over {timeout_s:.0f} s to lay out {len(graph.nodes)} ops: the ops are "
                              "listed as a table instead") from None
    if done.returncode != 0:
        raise GraphvizMissing(f"dot failed: {done.stderr.decode(errors='replace').strip()[:300]}")
    svg = done.stdout.decode()
    svg = svg[svg.index("<svg"):]
    # a fixed pt size would overflow the page: the viewBox alone sizes it (the script zooms)
    svg = re.sub(r'<svg width="[^"]*" height="[^"]*"', '<svg id="graph-svg"', svg, count=1)
    return svg
