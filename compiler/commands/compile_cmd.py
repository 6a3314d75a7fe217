"""`kiln compile`: compile a zoo-style factory, measure it against eager, report."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from compiler.cli import fail


def run_compile(
    model_spec: str, target: str, out: Path | None, pipeline: str | None, check: bool,
    as_json: bool, strict: bool, dump_ir: bool, no_cache: bool, atol: float, rtol: float,
    cache_url: str | None = None, extra: dict[str, str] | None = None, html_report: Path | None = None,
    progress: Any = None,
) -> None:
    from backends import BackendError, UnknownTargetError
    from backends.registry import TARGETS
    from compiler.capture import CaptureError, StrictCaptureError
    from compiler.driver import compile_model
    from compiler.model_loader import ModelSpecError, load_model
    from passes import PipelineError, parse_pipeline
    from passes.fusion import FusionOptionError
    from passes.quant_solver import QuantizationError
    from passes.reuse_factor import ReuseFactorError

    if target not in TARGETS:
        fail(f"unknown target {target!r}; known targets: {', '.join(sorted(TARGETS))}")
    if dump_ir and out is None:
        fail("--dump-ir writes the IR after every pass under --out DIR (DIR/passes/); add --out DIR")
    if pipeline is not None:
        try:
            parse_pipeline(pipeline)
        except PipelineError as err:
            fail(str(err))
    try:
        model, inputs, name = load_model(model_spec)
    except ModelSpecError as err:
        fail(str(err))
    model.eval()
    from compiler.cli import warn
    from compiler.service.client import CacheClient, CacheURLError

    try:  # --cache or KILN_CACHE: read here only; a fallback to the local cache is said once
        tuning_cache = CacheClient.from_env(cache_url, on_fallback=warn)
    except CacheURLError as err:
        fail(str(err))
    tuning_cache.preflight()
    extra = dict(extra or {})
    if target == "hls" and check:
        extra["verify"] = "exact"  # every call of the C simulation is compared with the emulation
    startup_s = import_backend_libraries(target)
    try:
        compiled = compile_model(
            model, inputs, target=target, pipeline=pipeline, strict=strict,
            out_dir=out, dump_ir=dump_ir, use_cache=not no_cache, tuning_cache=tuning_cache, extra=extra,
            on_stage=progress.stage if progress is not None else None,
        )
    except (StrictCaptureError, CaptureError, UnknownTargetError, BackendError) as err:
        fail(str(err))
    except (FusionOptionError, QuantizationError, ReuseFactorError, PipelineError) as err:
        fail(str(err))  # a pass refused its options or budget: the message says which and why
    finally:
        tuning_cache.close()
    report = dict(compiled.report)
    report["model"] = name
    report["startup_s"] = startup_s
    if progress is not None:
        progress.stage("running against eager")
    with torch.no_grad():
        expected = model(*inputs)
        try:
            actual = compiled(*inputs)
        except BackendError as err:
            fail(str(err), code=1)
    max_err, ok = compare(actual, expected, atol, rtol)
    if target == "hls":
        # Fixed point cannot meet fp32 tolerances: --check asks for bit-exactness with the
        # emulation (checked on every call above); the fp32 error is the quantization error.
        report["rel_rms_err"] = rel_rms(actual, expected)
        ok = True
    if progress is not None:
        progress.stage("timing against eager")
    report.update(_latencies(model, compiled, inputs, target))
    report["max_abs_err"] = max_err
    report["check"] = "pass" if ok else "FAIL"
    from compiler.report.steps import without_ir

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(without_ir(report), indent=2, default=str))
    if html_report is not None:
        if progress is not None:
            progress.stage("measuring each kernel")
        report["measured"] = compiled.measure_kernels()  # only for the page: the JSON stays as it was
        if progress is not None:
            progress.stage("writing the HTML report")
        write_html_report(report, html_report, as_json)
    if progress is not None:
        progress.stop()  # the line goes before the results are printed
    if as_json:
        sys.stdout.write(json.dumps(without_ir(report), default=str) + "\n")
    else:
        print_report(report)
    if check and not ok:
        fail(f"output differs from eager PyTorch: max abs error {max_err:.3g} (atol {atol}, rtol {rtol})", code=1)


def write_html_report(report: dict[str, Any], path: Path, quiet: bool) -> None:
    """`--report out.html`: the page of every decision (compiler/report), after the timing."""
    from compiler.report import write_report

    write_report(report, path)
    if not quiet:
        from compiler.cli import err_console

        err_console.print(f"wrote the report to {path}", markup=False, highlight=False, soft_wrap=True)


def compare(actual: Any, expected: Any, atol: float, rtol: float) -> tuple[float, bool]:
    from torch.utils import _pytree as pytree

    a_flat, e_flat = pytree.tree_leaves(actual), pytree.tree_leaves(expected)
    if len(a_flat) != len(e_flat):
        return float("inf"), False
    max_err, ok = 0.0, True
    for a, e in zip(a_flat, e_flat):
        if not isinstance(e, torch.Tensor):
            ok = ok and a == e
            continue
        if a.shape != e.shape or a.dtype != e.dtype:
            return float("inf"), False
        diff = (a.double() - e.double()).abs()
        worst = float(diff.max()) if diff.numel() else 0.0
        if math.isnan(worst) or worst > max_err:  # max() would drop a NaN and report 0
            max_err = worst
        ok = ok and torch.allclose(a, e, atol=atol, rtol=rtol)
    return max_err, ok


def rel_rms(actual: Any, expected: Any) -> float:
    """sqrt(sum (a - e)^2 / sum e^2) over every floating-point output."""
    from torch.utils import _pytree as pytree

    num = den = 0.0
    for a, e in zip(pytree.tree_leaves(actual), pytree.tree_leaves(expected)):
        if isinstance(e, torch.Tensor) and e.is_floating_point():
            num += float(((a.double() - e.double()) ** 2).sum())
            den += float((e.double() ** 2).sum())
    return math.sqrt(num / den) if den else math.sqrt(num)


def _latencies(model: torch.nn.Module, compiled: Any, inputs: tuple, target: str) -> dict[str, Any]:
    from compiler.commands.latency import TimingFailed, measure, timing_mode

    def eager() -> object:
        with torch.inference_mode():
            return model(*inputs)

    try:
        out = measure(eager, lambda: compiled(*inputs), timing_mode(target))
    except TimingFailed as err:
        fail(str(err), code=1)
    if out["timing_warning"]:
        from compiler.cli import warn

        warn(out["timing_warning"])
    return out


def fusion_line(f: dict[str, Any]) -> str:
    """Kernels and modeled time for none / greedy / chosen, and how the solver did."""
    chosen = f.get("chosen", f.get("solver"))
    parts = [f"{label} {f[f'kernels_{label}']} kernels {f[f'time_us_{label}']:.0f} us"
             for label in ("none", "greedy", "ilp") if f"kernels_{label}" in f]
    status = f"{f.get('status', '')} in {f.get('solve_seconds', 0.0) * 1e3:.0f} ms" if "status" in f else ""
    return f"chose {chosen}; " + ", ".join(parts) + (f"; solver {status}" if status else "")


def hls_line(h: dict[str, Any], rel_rms_err: float | None) -> str:
    """Reuse factors, estimated latency and resources against the budget, and the error."""
    line = (f"{h.get('part')} @ {h.get('clock_ns')} ns: reuse {h.get('reuse', '')}; "
            f"{h.get('latency_cycles')} cycles ({h.get('latency_us', 0.0):.2f} us), "
            f"DSP {h.get('dsp')}/{h.get('budget_dsp')}, BRAM18 {h.get('bram_18k')}/{h.get('budget_bram_18k')}, "
            f"LUT {h.get('lut')}/{h.get('budget_lut')}; uniform reuse {h.get('baseline_reuse')}: "
            f"{h.get('baseline_latency_cycles')} cycles; weights {h.get('precision', '')}")
    if rel_rms_err is not None:
        line += f"; bit-exact with the emulation, rel RMS error vs fp32 {rel_rms_err:.3g}"
    return line


def quant_line(paths: dict[str, str]) -> str:
    """Which quantized weights a matmul decodes in its own kernel, and where the rest went."""
    fused = {w: p for w, p in paths.items() if p.startswith(("fused", "int8-dyn"))}  # int8-dyn: int8 sums in-kernel
    rest = {w: p for w, p in paths.items() if w not in fused}
    line = f"{len(fused)}/{len(paths)} weights dequantized inside their matmul kernel"
    if fused:
        line += ": " + ", ".join(f"{w} ({p.replace('fused-matmul ', '')})" for w, p in fused.items())
    if rest:
        line += "; not fused: " + ", ".join(f"{w} ({p})" for w, p in rest.items())
    return line


def import_backend_libraries(target: str) -> float:
    """Import what a compile for `target` loads (torch.export and Dynamo, TVM's Relax or
    Triton) before the compile clock starts, and return the seconds it took. In a fresh
    process these imports took 7-10 s on a 2-core Zen 1, more than compiling `mlp` from the
    artifact cache; counted in `compile_s`, a cache hit looked like a slow compile."""
    start = time.perf_counter()
    import torch._dynamo  # noqa: F401
    import torch.export  # noqa: F401

    if target == "tvm":
        import tvm.relax  # noqa: F401
    elif target == "triton":
        import triton  # noqa: F401
    return time.perf_counter() - start


def pool_text(pools: dict[str, int], plan: str = "") -> str:
    """The threads in use during a call, and the rule's reason (`thread_policy.py`)."""
    if not pools:
        return "-"
    return f"TVM {pools['tvm']}, torch {pools['torch']}" + (f" ({plan})" if plan else "")


def print_report(report: dict[str, Any], console: Console | None = None, title: str | None = None) -> None:
    """The report table; rows the report lacks (a torch.compile graph is not timed against
    eager) are left out. `compiler/report_print.py` prints torch.compile's with it."""
    from compiler.commands.latency import latency_rows

    console = console or Console()
    title = title or f"kiln compile {report['model']} --target {report['target']}"
    table = Table(title=Text(title), show_header=False)
    rows = [
        ("ops", report["num_ops"]),
        ("kernels", report["num_kernels"]),
        ("partitions", report["num_partitions"]),
        ("compile", f"{report['compile_s']:.2f} s" + (" (cache hit)" if report.get("cache_hit") else "")
         + (f", capture {report['capture_s']:.2f} s" if "capture_s" in report else "")),
        *([("startup", f"{report['startup_s']:.2f} s importing torch.export and the backend (once per process)")]
          if "startup_s" in report else []),
        *(latency_rows(report) if "eager_ms" in report else []),
        *([("max abs err", f"{report['max_abs_err']:.3g} ({report['check']})")] if "max_abs_err" in report else []),
        ("tuned", (f"{report.get('tuned_kernels', 0)} kernels with tuned knobs "
                   f"({report.get('tuning_hits', 0)} found in the tuning cache)")),
        ("fallback ops", ", ".join(f"{f['op']} x{f['count']}" for f in report["fallback_ops"]) or "none"),
        ("threads", pool_text(report.get("pool_threads") or {}, report.get("thread_plan", ""))),
        ("passes", ", ".join(f"{p['name']} {p['seconds'] * 1e3:.1f} ms" for p in report["passes"])
         or ("skipped: the compile cache had this captured IR" if (report.get("compile_cache") or {}).get("hits")
             else "no passes (empty pipeline)")),
    ]
    fusion = report.get("decisions", {}).get("fusion")
    if fusion:
        rows.append(("fusion", fusion_line(fusion)))
    if report.get("quant_paths"):
        rows.append(("dequantize", quant_line(report["quant_paths"])))
    hls = report.get("decisions", {}).get("hls")
    if hls:
        rows.append(("hls", hls_line(hls, report.get("rel_rms_err"))))
    for key, value in rows:
        table.add_row(key, Text(str(value)))  # verbatim: op names, paths and reasons hold '[' 
    console.print(table)
