"""Regenerate the README's report screenshots (docs/report*.png) in headless Chromium.

    python tests/compiler/report/make_screenshots.py

Compiles the zoo's gpt on TVM and the zoo's mlp quantized, opens each report with the
browser harness the tests use, and saves: the graph with "linear" searched and one op
clicked (docs/report.png), the kernel section with measured and modeled times on the
roofline (docs/report_kernels.png), and the per-layer quantization table against the
uniform baseline (docs/report_quant.png).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(HERE)]

from browser import chromium, console_errors, missing_reason

QUANT = "fold-constants,kiln-canonicalize,cse,dce,quantize{avg-bits=6}"


def compile_reports(tmp: Path) -> tuple[Path, Path]:
    from compiler import compile_model
    from examples import zoo

    gpt, quant = tmp / "gpt.html", tmp / "quant.html"
    model, inputs = zoo.gpt()
    compile_model(model, inputs, target="tvm", report=gpt, use_cache=False)
    model, inputs = zoo.mlp()
    compile_model(model, inputs, target="eager", pipeline=QUANT, report=quant, use_cache=False)
    return gpt, quant


def shoot(driver, page: Path, script: str, out: Path) -> None:
    driver.get(page.resolve().as_uri())
    driver.execute_script(script)
    errors = console_errors(driver)
    if errors:
        raise SystemExit(f"{page.name}: console errors {errors}")
    driver.save_screenshot(str(out))
    print(f"wrote {out}")


def main() -> None:
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as tmp, chromium(1400, 760) as driver:
        gpt, quant = compile_reports(Path(tmp))
        shoot(driver, gpt, """
            const s = document.getElementById('graph-search');
            s.value = 'linear'; s.dispatchEvent(new Event('input'));
            const hit = document.querySelector('#graph-svg g.node.hit');
            if (hit) hit.dispatchEvent(new MouseEvent('click', {bubbles: true}));
            document.getElementById('graph').scrollIntoView();""", docs / "report.png")
        shoot(driver, gpt, "document.getElementById('kernels').scrollIntoView()", docs / "report_kernels.png")
        shoot(driver, quant, """
            const t = Array.from(document.querySelectorAll('#decision-quantization .table-title'))
                           .find(e => e.textContent.includes('uniform baseline'));
            t.scrollIntoView(); window.scrollBy(0, -12);""", docs / "report_quant.png")


if __name__ == "__main__":
    main()
