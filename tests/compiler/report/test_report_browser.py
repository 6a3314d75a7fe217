"""The report in a real browser: headless Chromium opens each page from disk.

Checks what a reader sees: the page loads with no console errors, the graph has one node
per op and one cluster per fused group, every decision the compile made has its section,
search finds ops, and the plots drew. Screenshots land next to the reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import console_errors


def open_page(driver, path: Path) -> dict:
    driver.get(path.resolve().as_uri())
    return driver.execute_script("""
        const q = s => document.querySelectorAll(s);
        return {
          nodes: q('#graph-svg g.node').length,
          groups: Array.from(q('#graph-svg g.cluster')).filter(c => c.id.startsWith('group-')).length,
          islands: Array.from(q('#graph-svg g.cluster')).filter(c => c.id.startsWith('fallback-')).length,
          recomputed: Array.from(q('#graph-svg g.node path, #graph-svg g.node polygon'))
                        .filter(p => (p.getAttribute('stroke-dasharray') || '') !== '').length,
          sections: Array.from(q('section')).map(s => s.id),
          plots: Array.from(q('.js-plotly-plot')).filter(p => p.querySelector('svg.main-svg')).length,
          figures: q('.plotly-graph-div').length,
          warn: Array.from(q('section .badge.warn')).map(b => b.closest('section').id),
          text: document.body.textContent,
        };""")


def decision_ids(report: dict) -> set[str]:
    out = set()
    for i, part in enumerate(report["partitions"]):
        out |= {f"decision-{k}" + (f"-p{i}" if i else "") for k in part["decisions"]}
    return out


def groups_of(report: dict) -> int:
    """Distinct fused groups, read from the optimized IR the compile produced."""
    from compiler.report.graph import build_graph

    graph = build_graph(report, [p["optimized_ir"] for p in report["partitions"]])
    return len(graph.groups())


def check_page(driver, report: dict, path: Path) -> dict:
    page = open_page(driver, path)
    assert console_errors(driver) == []
    assert page["nodes"] == report["num_ops"] + sum(f["count"] for f in report["fallback_ops"])
    assert page["groups"] == groups_of(report)
    assert decision_ids(report) <= set(page["sections"])
    assert {"overview", "graph", "stages"} <= set(page["sections"])
    assert page["plots"] == page["figures"] > 0  # every Plotly figure drew its SVG
    driver.save_screenshot(str(path.with_suffix(".png")))
    return page


def test_gpt_report_shows_every_op_group_and_decision(browser, gpt_report) -> None:
    report, path = gpt_report
    page = check_page(browser, report, path)
    assert page["groups"] == report["num_kernels"] > 1  # TVM builds one kernel per fused group
    assert "decision-fusion" in page["sections"] and "kernels" in page["sections"]
    assert "packed" in page["text"] or "library" in page["text"]  # each linear's kernel path
    search = browser.find_element("id", "graph-search")
    search.send_keys("attention")
    hits = browser.execute_script("return document.querySelectorAll('#graph-svg g.node.hit').length")
    assert hits == sum(1 for line in report["partitions"][0]["optimized_ir"].splitlines() if '"kiln.attention"' in line)
    assert browser.find_element("id", "graph-hits").text == f"{hits} ops match"


def test_hls_report_shows_reuse_resources_and_layers(browser, hls_report) -> None:
    report, path = hls_report
    page = check_page(browser, report, path)
    assert {"decision-quantization", "decision-hls_reuse", "decision-hls"} <= set(page["sections"])
    layers = report["decisions"]["hls_reuse"]["layers"]
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#decision-hls_reuse table')).map(t => t.rows.length)")
    assert rows[-1] == layers + 1  # the per-layer table: a header and one row per MAC layer
    assert "% of xcu280" in page["text"] or "budget" in page["text"]


def test_fallback_island_is_drawn_in_its_own_cluster(browser, fallback_report) -> None:
    report, path = fallback_report
    assert report["fallback_ops"], "the model must fall back to eager for this test"
    page = check_page(browser, report, path)
    assert page["islands"] == 1 and "fallbacks" in page["sections"]
    assert "eager fallback" in page["text"]


def test_quantized_report_lists_a_format_per_layer(browser, quant_report) -> None:
    report, path = quant_report
    page = check_page(browser, report, path)
    q = report["decisions"]["quantization"]
    assert q["status"] == "optimal" and "decision-quantization" in page["sections"]
    for fmt in (f.split(":")[0] for f in q["formats"].split(",")):
        assert fmt in page["text"]
    assert "uniform int8" in page["text"]  # the uniform baselines side by side


def test_a_timed_out_solver_is_flagged_and_still_renders(browser, timeout_report) -> None:
    report, path = timeout_report
    q = report["decisions"]["quantization"]
    assert q["status"] != "optimal", "the 1 us time limit must stop the solver for this test"
    page = check_page(browser, report, path)
    assert "decision-quantization" in page["warn"]
    assert q["fallback_reason"] in page["text"] or "solver stopped" in page["text"]


def test_memory_sharding_and_stages_each_have_their_section(browser, planned_report) -> None:
    report, path = planned_report
    m = report["decisions"]["memory"]
    page = check_page(browser, report, path)
    assert {"decision-fusion", "decision-memory", "decision-shard", "decision-pipeline"} <= set(page["sections"])
    drawn = browser.execute_script(
        "return document.querySelector('#decision-memory .js-plotly-plot').data.length")
    assert drawn == m["buffers"]  # the arena: one rectangle per planned buffer
    nodes = browser.execute_script("return JSON.parse(document.getElementById('graph-nodes').textContent)")
    assert any(n["decisions"].get("memory", {}).get("offset") for n in nodes)  # offsets on the nodes
    placed = [n for n in nodes if "placement" in n["decisions"]]
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#decision-shard table')).map(t => t.rows.length)")
    assert placed and rows[-1] == len(placed) + 1  # the placement table: one row per placed op
    stages = report["decisions"]["pipeline"]["stage_us"].split(",")
    assert len(stages) == report["decisions"]["pipeline"]["stages"] == 2


@pytest.mark.parametrize("width", [700])
def test_narrow_window_still_has_no_console_errors(browser, gpt_report, width: int) -> None:
    _, path = gpt_report
    browser.set_window_size(width, 900)
    try:
        open_page(browser, path)
        browser.execute_script("window.kilnGraph.fit()")
        assert console_errors(browser) == []
    finally:
        browser.set_window_size(1400, 1000)


def test_bench_page_draws_one_bar_series_per_system(browser, report_dir) -> None:
    import json

    from compiler.report.bench import write_bench_report

    results = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "latest.json"
    data = json.loads(results.read_text())
    path = write_bench_report(data, report_dir / "bench.html")
    browser.get(path.resolve().as_uri())
    assert console_errors(browser) == []
    names = browser.execute_script("return document.getElementById('fig-speedups').data.map(t => t.name)")
    assert names == [s for s in data["systems"] if s != "eager"]
    browser.save_screenshot(str(path.with_suffix(".png")))
