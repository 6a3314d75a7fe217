"""Quantization per layer against the uniform baseline: each layer's chosen format, bytes
and error contribution beside the same layer's under the uniform format the pass reports
as its baseline, and totals that are the pass's own totals."""

from __future__ import annotations

import pytest

from browser import console_errors


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def layer_attrs(report: dict) -> list[dict]:
    from compiler.report.graph import build_graph

    graph = build_graph(report, [p["optimized_ir"] for p in report["partitions"]])
    seen, out = set(), []
    for n in graph.nodes:
        if n.quant_info and n.quant_info.get("weight") not in seen:
            seen.add(n.quant_info["weight"])
            out.append(n.quant_info)
    return out


def test_each_layer_carries_its_uniform_baseline_and_the_totals_are_the_pass_totals(quant_report) -> None:
    report, _ = quant_report
    q = report["decisions"]["quantization"]
    layers = layer_attrs(report)
    assert len(layers) == q["layers"] > 1
    base = q["baseline_uniform"]
    # the baseline is the uniform format of least summed error within the byte budget
    fits = {k[len("uniform_"):-len("_bytes")] for k, v in q.items()
            if k.startswith("uniform_") and k.endswith("_bytes") and v <= q["budget_bytes"]}
    assert base in fits and q["baseline_objective"] == min(q[f"uniform_{f}_objective"] for f in fits)
    assert all(layer["uniform_format"] == base for layer in layers)
    assert sum(layer["bytes"] for layer in layers) == q["bytes"]
    assert sum(layer["sensitivity"] for layer in layers) == pytest.approx(q["objective"])
    assert sum(layer["uniform_bytes"] for layer in layers) == q["baseline_bytes"] == q[f"uniform_{base}_bytes"]
    assert sum(layer["uniform_sensitivity"] for layer in layers) == pytest.approx(q["baseline_objective"])


def test_the_page_has_both_errors_and_both_byte_counts_per_layer(browser, quant_report) -> None:
    report, path = quant_report
    q = report["decisions"]["quantization"]
    browser.get(path.resolve().as_uri())
    assert console_errors(browser) == []
    table = browser.execute_script("""
        const t = Array.from(document.querySelectorAll('#decision-quantization table'))
                       .find(t => t.rows[0].textContent.includes('uniform error contribution'));
        return Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent.trim()));""")
    head, rows, total = table[0], table[1:-1], table[-1]
    col = {h: head.index(h) for h in ("format", "bytes", "error contribution", "uniform format", "uniform bytes",
                                      "uniform error contribution")}
    assert len(rows) == q["layers"]
    for row in rows:
        assert row[col["format"]] and row[col["uniform format"]] == q["baseline_uniform"]
        for name in ("bytes", "error contribution", "uniform bytes", "uniform error contribution"):
            assert _num(row[col[name]]) > 0, (name, row)
    assert total[0] == "total"
    assert _num(total[col["bytes"]]) == q["bytes"]
    assert _num(total[col["uniform bytes"]]) == q["baseline_bytes"]
    assert _num(total[col["error contribution"]]) == pytest.approx(q["objective"], rel=1e-3)
    assert _num(total[col["uniform error contribution"]]) == pytest.approx(q["baseline_objective"], rel=1e-3)
    traces = browser.execute_script("return document.getElementById('fig-quant-0').data.map(t => t.name)")
    assert traces == ["chosen", f"uniform {q['baseline_uniform']}"]
