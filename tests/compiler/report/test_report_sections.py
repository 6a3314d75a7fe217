"""The report's pieces without a browser: graph data, recompute marks, the section registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser import requires_dot
from compiler.report.graph import build_graph
from compiler.report.render import compile_stages, render_report
from compiler.report.sections import RENDERERS, Context, decision_sections, register
from compiler.report.steps import without_ir

RECOMPUTE_IR = Path(__file__).resolve().parents[2] / "passes" / "filecheck" / "fuse_recompute.mlir"


def optimized(text: str, pipeline: str) -> tuple[str, dict]:
    """Run a real pipeline on IR text; the optimized text and the module's decisions."""
    from compiler.driver import module_decisions
    from ir import parse_module, print_module
    from passes import run_pipeline

    module = parse_module(re.sub(r"//.*", "", text))
    run_pipeline(module, pipeline)
    return print_module(module), module_decisions(module)


def report_of(ir: str, decisions: dict, target: str = "eager") -> dict:
    return {"model": "m", "target": target, "num_ops": 0, "fallback_ops": [], "passes": [], "compile_s": 0.1,
            "capture_s": 0.01, "decisions": decisions,
            "partitions": [{"decisions": decisions, "optimized_ir": ir, "build_s": 0.0, "num_ops": 0}]}


def test_recomputed_ops_are_found_and_drawn_dashed() -> None:
    ir, decisions = optimized(RECOMPUTE_IR.read_text(), "fuse{multi-reduction=false}")
    assert decisions["fusion"]["recomputed"] == 1
    graph = build_graph(report_of(ir, decisions), [ir])
    marked = [n for n in graph.nodes if n.recomputed]
    assert [n.op for n in marked] == ["add", "add"] and {n.group for n in marked} == {0, 1}
    assert len(graph.groups()) == 2 and len(graph.nodes) == 4
    assert len(graph.edges) == 2  # each reduce reads its own group's copy of the add
    from compiler.report.graph_svg import dot_source

    assert dot_source(graph).count("dashed") == 2


def test_without_fusion_no_op_is_marked_recomputed() -> None:
    ir, decisions = optimized(RECOMPUTE_IR.read_text(), "fuse{multi-reduction=false recompute=false}")
    graph = build_graph(report_of(ir, decisions), [ir])
    assert not any(n.recomputed for n in graph.nodes) and len(graph.nodes) == 3


def test_an_unknown_decision_gets_the_generic_section_with_every_field() -> None:
    summary = {"solver": "ilp", "status": "time_limit", "objective_s": 1.5, "bound_s": 1.0, "gap": 0.33,
               "solve_seconds": 0.2, "stages": 4, "baseline_equal_split_s": 2.0}
    (sec,) = decision_sections({"pipeline_stages": summary}, Context({}))
    assert sec.key == "decision-pipeline_stages" and not sec.status_ok
    card = dict(sec.solver)
    assert card["objective (objective_s)"] == "1.5" and card["bound (bound_s)"] == "1" and card["gap"] == "0.33"
    assert {row[0] for row in sec.tables[0].rows} == set(summary)


def test_a_registered_renderer_replaces_the_generic_one_and_a_crash_falls_back() -> None:
    calls = []

    @register("test_only_decision")
    def broken(summary, ctx):
        calls.append(summary)
        raise KeyError("missing")

    try:
        (sec,) = decision_sections({"test_only_decision": {"status": "optimal", "x": 1}}, Context({}))
    finally:
        RENDERERS.pop("test_only_decision")
    assert calls and sec.tables[0].rows == [["status", "optimal"], ["x", "1"]]
    assert "renderer failed" in sec.notes[0]


def test_compile_stages_add_up_to_the_compile_time() -> None:
    report = {"capture_s": 0.5, "passes": [{"name": "fuse", "seconds": 1.0}], "compile_s": 3.0,
              "partitions": [{"build_s": 1.25}]}
    stages = compile_stages(report)
    assert [s for s, _ in stages] == ["capture", "pass fuse", "build", "other (partitioning, conversion, IR printing)"]
    assert sum(t for _, t in stages) == pytest.approx(3.0)


@requires_dot
def test_the_page_is_self_contained() -> None:
    ir, decisions = optimized(RECOMPUTE_IR.read_text(), "fuse{multi-reduction=false}")
    page = render_report(report_of(ir, decisions))
    # nothing loads from elsewhere: no script src, no stylesheet link, no URL outside the scripts
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert "https://" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert "Plotly" in page  # plotly.js itself is inline
    assert page.count('class="node"') == 3 + 1  # 4 ops drawn (two copies of the add)
    assert 'id="decision-fusion"' in page


def test_without_graphviz_the_page_says_why_and_lists_the_ops(monkeypatch) -> None:
    import compiler.report.graph_svg as graph_svg

    monkeypatch.setattr(graph_svg.shutil, "which", lambda name: None)
    ir, decisions = optimized(RECOMPUTE_IR.read_text(), "fuse{multi-reduction=false}")
    page = render_report(report_of(ir, decisions))
    assert "apt-get install graphviz" in page and 'id="graph-svg"' not in page
    assert page.count("<tr><td>p0.") == 4  # the op table still lists every op


def test_expert_placement_section_has_the_baselines_and_a_load_heat_map(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(RECOMPUTE_IR.parents[1] / "experts"))
    from moe_cases import moe_ir, random_trace

    trace = random_trace(2, 4, 2, 16, 2, 7)
    trace.save(tmp_path / "trace.json")
    pipeline = f'place-experts{{devices=2 trace="{tmp_path / "trace.json"}" time-limit=5}}'
    ir, decisions = optimized(moe_ir(), pipeline)
    report = {**report_of(ir, decisions), "pipeline": pipeline}
    graph = build_graph(report, [ir])
    (sec,) = decision_sections(decisions, Context(report, graph, 0))
    assert sec.key == "decision-experts" and sec.status_ok
    placements = [row[0] for row in sec.tables[0].rows]
    assert placements[0].endswith("(chosen)") and {"contiguous", "round_robin", "greedy"} <= set(placements)
    assert len(sec.figures) == 1 and "tokens routed" in sec.figures[0]
    # a layer's cells add up to the tokens x top-k the trace routed (2 calls of 16 tokens, k=2)
    from compiler.report.sections.experts import placement_grid

    z, experts, rows, _ = placement_grid(Context(report, graph, 0), decisions["experts"])
    assert len(experts) == 4 and rows[:2] == ["layer 0 / device 0", "layer 0 / device 1"]
    assert sum(map(sum, z[:2])) == pytest.approx(2 * 16 * 2)
    assert any(n.decisions.get("expert devices") for n in graph.nodes)


def test_json_report_drops_only_the_ir() -> None:
    report = {"a": 1, "partitions": [{"optimized_ir": "x" * 100, "num_ops": 3}]}
    assert without_ir(report) == {"a": 1, "partitions": [{"num_ops": 3}]}
    assert report["partitions"][0]["optimized_ir"]  # the caller's dict is untouched
