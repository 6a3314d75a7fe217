"""Measured per-kernel times: every TVM kernel call of the zoo's gpt, timed on the real
inputs and attributed to a Kiln kernel; backends that cannot time kernels say so."""

from __future__ import annotations

import pytest

from browser import console_errors


def test_every_tvm_kernel_of_gpt_has_a_positive_measured_time(gpt_report) -> None:
    report, _ = gpt_report
    measured = report["measured"]
    (part,) = measured["partitions"]
    calls = part["calls"]
    assert len(calls) >= report["num_kernels"] // 2  # reshape-only groups are views: no call
    assert all(c["us"] > 0 for c in calls)
    # every call is attributed to the group that emitted it (shared PrimFuncs included)
    assert all("group" in c for c in calls), [c for c in calls if "group" not in c]
    groups = {c["group"] for c in calls}
    assert {0, report["num_kernels"] - 1} <= groups  # the embedding and the head
    dense = [c for c in calls if c["symbol"].startswith("kiln_dense_")]
    assert len(dense) == sum(1 for p in report["dense_paths"].values() if p.startswith("packed"))
    total_ms = sum(c["us"] for c in calls) * 1e-3
    # the kernels are most of a call; the rest is the VM's builtins and the Python around it
    assert 0.3 * measured["call_ms"] < total_ms < 1.5 * measured["call_ms"], (total_ms, measured["call_ms"])


def test_measured_kernels_line_up_with_the_report_kernels(gpt_report) -> None:
    from compiler.report.graph import build_graph
    from compiler.report.kernels import kernel_costs

    report, _ = gpt_report
    graph = build_graph(report, [p["optimized_ir"] for p in report["partitions"]])
    kernels, _ = kernel_costs(graph, "tvm", report["measured"])
    for k in kernels:
        if set(k.ops) <= {"reshape"}:
            continue  # a view: no kernel runs
        assert k.measured_us is not None and k.measured_us > 0, k.name
    total = sum(c["us"] for c in report["measured"]["partitions"][0]["calls"])
    assert sum(k.measured_us or 0 for k in kernels) == pytest.approx(total)


def test_the_page_shows_measured_times_beside_modeled_ones(browser, gpt_report) -> None:
    _, path = gpt_report
    browser.get(path.resolve().as_uri())
    assert console_errors(browser) == []
    traces = browser.execute_script(
        "return document.getElementById('fig-roofline').data.map(t => [t.name, t.x.length])")
    names = dict(traces)
    assert names["kernels (measured)"] == names["kernels (modeled)"] > 0  # each kernel with FLOPs: both points
    cells = browser.execute_script("""
        const t = Array.from(document.querySelectorAll('#kernels table')).pop();
        const col = Array.from(t.rows[0].cells).findIndex(c => c.textContent.trim() === 'measured (us)');
        return Array.from(t.rows).slice(1).map(r => [r.cells[1].textContent, r.cells[col].textContent]);""")
    for ops, cell in cells:
        if ops.strip() == "reshape":
            assert cell == "no call (a view)"
        else:
            assert float(cell.replace(",", "")) > 0, (ops, cell)
    bars = browser.execute_script("return document.getElementById('fig-kernel-times').data.map(t => t.name)")
    assert bars == ["modeled", "measured"]


def test_hls_kernels_are_not_measured_and_the_page_says_why(hls_report) -> None:
    report, path = hls_report
    assert all("not_measured" in p and "C simulation" in p["not_measured"] for p in report["measured"]["partitions"])
    assert report["measured"]["call_ms"] is None
    html = path.read_text()
    assert "not measured: the C simulation is not the FPGA" in html


def test_a_compile_without_a_report_measures_nothing() -> None:
    from backends.tvm import profile
    from compiler import compile_model
    from examples import zoo

    model, inputs = zoo.mlp()
    seen = []
    original = profile.recording
    profile.recording = lambda *a, **k: seen.append(a) or original(*a, **k)
    try:
        compiled = compile_model(model, inputs, target="tvm", use_cache=False)
        compiled(*inputs)
    finally:
        profile.recording = original
    assert seen == [] and "measured" not in compiled.report
    measured = compiled.measure_kernels()  # what --report calls: on request only
    assert measured["call_ms"] > 0 and all(c["us"] > 0 for c in measured["partitions"][0]["calls"])


def test_the_triton_interpreter_is_not_timed_and_nothing_runs() -> None:
    from compiler.report.measure import measure_kernels

    calls = []
    measured = measure_kernels("triton", [object(), object()], [None, None], lambda: calls.append(1))
    assert calls == [] and measured["call_ms"] is None
    assert [p["not_measured"].split(":")[0] for p in measured["partitions"]] == ["not measured"] * 2
    assert "TRITON_INTERPRET" in measured["partitions"][0]["not_measured"]
