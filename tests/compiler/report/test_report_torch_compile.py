"""torch.compile with a report path: a model that graph-breaks gets one page per Dynamo
graph and an index page linking them (compiler/report/graphs.py), instead of the second
graph overwriting the first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from browser import console_errors, requires_dot


class BreaksOnce(nn.Module):
    """Two Dynamo graphs: linear + relu, then (after the break) linear + softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(16, 32)
        self.second = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        torch._dynamo.graph_break()
        return torch.softmax(self.second(h), dim=-1)


@pytest.fixture(scope="module")
def broken_pages(tmp_path_factory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = BreaksOnce().eval(), torch.randn(4, 16)
    index = tmp_path_factory.mktemp("tc") / "out.html"
    compiled = torch.compile(model, backend="kiln", options={"target": "tvm", "report": str(index), "use_cache": False})
    with torch.no_grad():
        got = compiled(x)
        compiled(x)  # a second call reuses both graphs: no new page
        want = model(x)
    torch._dynamo.reset()
    return index, got, want


@requires_dot
def test_each_dynamo_graph_gets_its_own_page_and_the_index_links_them(broken_pages) -> None:
    index, got, want = broken_pages
    torch.testing.assert_close(got, want)
    pages = sorted(p.name for p in index.parent.glob("out.graph*.html"))
    assert pages == ["out.graph0.html", "out.graph1.html"]
    html = index.read_text()
    for name in pages:
        assert f'href="{name}"' in html
    first, second = (ops_on(index.parent / p) for p in pages)
    assert "relu" in first and "softmax" not in first
    assert "softmax" in second and "relu" not in second


def ops_on(page: Path) -> set[str]:
    """The ops of the graph drawn on a report page (its embedded node data)."""
    import json
    import re

    data = re.search(r'<script id="graph-nodes" type="application/json">(.*?)</script>', page.read_text(), re.DOTALL)
    return {n["op"] for n in json.loads(data.group(1))}


@requires_dot
def test_the_index_and_every_graph_page_open_in_the_browser(browser, broken_pages) -> None:
    index, _, _ = broken_pages
    browser.get(index.resolve().as_uri())
    assert console_errors(browser) == []
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('#graph-index a')).map(a => [a.textContent, a.href])")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#graph-index tr')).slice(1)"
        ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))")
    assert [name for name, _ in links] == ["out.graph0.html", "out.graph1.html"]
    for (name, href), row in zip(links, rows):
        browser.get(href)
        assert console_errors(browser) == []
        nodes = browser.execute_script("return document.querySelectorAll('#graph-svg g.node').length")
        assert nodes == int(row[3]) > 0  # the index's op count is the page's graph
        kernels = browser.execute_script("return document.getElementById('kernels').textContent")
        assert "kernels timed" in kernels  # measured on Dynamo's example inputs too
