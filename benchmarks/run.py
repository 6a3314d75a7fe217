"""Benchmark runner: every zoo model on every system, timed interleaved, checked against eager.

    python -m benchmarks.run [--suite zoo|real] [--models mlp,cnn]
                             [--systems eager,inductor,onnxruntime,kiln]
                             [--repeats 20] [--rounds 5] [--out DIR | --update-results]

`--suite real` times the real-model suite (`benchmarks/models.py`: Hugging Face and torch.nn
models from tiny configs) instead of Kiln's zoo, and writes `real.*` instead of `latest.*`.
A run writes `latest.json` and `latest.md` under the user cache dir (`~/.cache/kiln/bench/`,
or `--out DIR`); only `--update-results` replaces the committed `benchmarks/results/latest.*`
that the README's tables are checked against, so trying the benchmark does not break them.

`run_benchmarks` is the same thing as a function; `kiln bench` calls it. A system that is
not installed or that fails (Kiln's compiler included) becomes a cell in the table, never a
crash of the run: the point of the table is to show what works and what does not.
Torch's thread count is set explicitly (default: the cores this process may use) and ONNX
Runtime gets the same count, so every system runs on the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gc
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from benchmarks.report import OK, Results, Row, header_line, notes, rich_tables, write_results
from benchmarks.systems import SYSTEMS, System, make_system, one_line_error
from benchmarks.timing import TimingOptions, TimingStats, time_interleaved
from examples.zoo import ZOO

DEFAULT_SYSTEMS = ("eager", "inductor", "onnxruntime", "kiln")
COMMITTED_RESULTS = Path(__file__).resolve().parent / "results"  # the README's tables; --update-results


def user_results_dir() -> Path:
    """Where a plain `kiln bench` writes: the user cache dir, not the repository."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kiln")) / "bench"


def results_dir(out: Path | None, update_results: bool) -> Path:
    """The directory a run writes to: --out, the committed results with --update-results,
    else the user cache dir."""
    if out is not None and update_results:
        raise ValueError("--out and --update-results name two places; pass one")
    return COMMITTED_RESULTS if update_results else out if out is not None else user_results_dir()


def _nothing(*_: object) -> None:
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> str:
    """", LLVM <cpu>, <bits>-bit SIMD": which machine a table was measured on matters as much
    as its core count (an AVX2 Zen 1 host runs these models ~6x slower than an AVX-512 Zen 5)."""
    try:
        from backends.tvm.target import cpu_target, host_cpu, vector_bits

        return f", LLVM {host_cpu()}, {vector_bits(cpu_target())}-bit SIMD"
    except ImportError:  # TVM not installed: the name alone
        return ""


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """1-minute load average: a busy machine makes every latency in the table suspect."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_meta(threads: int, command: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "threads": threads,
        "cores": core_count(),
        "cpu": f"{cpu_name()} ({core_count()} cores{isa()})",
        "python": platform.python_version(),
        "load_avg_start": load_average(),
    }
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        meta["onnxruntime"] = None
    return meta


def compare_outputs(out: Any, ref: Any) -> tuple[float, bool]:
    """Max abs error over all output tensors, and whether it is within float32 noise."""
    got, want = pytree.tree_leaves(out), pytree.tree_leaves(ref)
    if len(got) != len(want):
        return float("inf"), False
    err, scale = 0.0, 0.0
    for g, w in zip(got, want, strict=True):
        g, w = torch.as_tensor(g), torch.as_tensor(w)
        if g.shape != w.shape:
            return float("inf"), False
        if w.numel():
            diff = (g.to(torch.float64) - w.to(torch.float64)).abs().max().item()
            err = max(err, float("inf") if math.isnan(diff) else diff)
            scale = max(scale, w.to(torch.float64).abs().max().item())
    return err, err <= 1e-3 + 1e-3 * scale


def _prepare(system: System, model: torch.nn.Module, inputs: tuple, ref: Any, row: Row) -> bool:
    """Prepare one system and check its output; fills `row`, returns whether it can be timed."""
    if reason := system.unavailable():
        row.status = reason
        return False
    try:
        # A private copy each: a compiler that rewrites the module in place (folding batch
        # norms, say) must not change what the other systems, eager included, run.
        model, inputs = copy.deepcopy(model), tuple(t.clone() for t in inputs)
        start = time.perf_counter()
        system.prepare(model, inputs)
        row.prepare_s = time.perf_counter() - start
        row.max_abs_err, row.matches = compare_outputs(system.call(inputs), ref)
    except Exception as exc:  # noqa: BLE001 - any failure becomes the cell's text
        row.status = one_line_error(exc)
        return False
    finally:
        row.info.update(system.info)
    return True


# The suites a run can time: name -> (factories by model name, stem of the result files).
SUITES = ("zoo", "real")


def suite_factories(suite: str) -> dict[str, Callable[[], tuple[torch.nn.Module, tuple]]]:
    """The model factories of `suite`, by name (raises KeyError naming the known suites)."""
    if suite == "zoo":
        return dict(ZOO)
    if suite == "real":
        from benchmarks import models as real

        return {m.name: (lambda n=m.name: real.build(n)) for m in real.SUITE}
    raise KeyError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")


def result_stem(suite: str) -> str:
    """File stem of a suite's results: `latest` for the zoo (the README's first table)."""
    return "latest" if suite == "zoo" else suite


def bench_model(
    name: str,
    system_names: Sequence[str],
    options: TimingOptions,
    kiln_target: str = "tvm",
    cold: bool = False,
    describe: Callable[[str], None] = _nothing,
    advance: Callable[[], None] = _nothing,
    suite: str = "zoo",
) -> list[Row]:
    """Prepare every system for one zoo model, time them interleaved, return one row each.

    For a progress bar, `describe(text)` names the work under way and `advance()` is called
    once per prepared system and once per timing round: `len(system_names) + options.rounds`.
    """
    model, inputs = suite_factories(suite)[name]()
    with torch.inference_mode():
        ref = model(*inputs)
    rows = {s: Row(model=name, system=s, status=OK) for s in system_names}
    systems = {s: make_system(s, kiln_target=kiln_target, cold=cold) for s in system_names}
    ready = {}
    for s, system in systems.items():
        describe(f"{name}: preparing {s}")
        if _prepare(system, model, inputs, ref, rows[s]):
            ready[s] = system
        advance()
    describe(f"{name}: timing {', '.join(ready) or 'nothing'} ({options.rounds} rounds)")
    fns = {s: (lambda sys_=sys_: sys_.call(inputs)) for s, sys_ in ready.items()}
    timed = time_interleaved(fns, options, on_round=lambda _: advance())
    for s, result in timed.items():
        if isinstance(result, TimingStats):
            rows[s].timing = result
        else:
            rows[s].status = one_line_error(result)
    for system in systems.values():
        with contextlib.suppress(Exception):  # cleanup must not lose the measurements
            system.close()
    del systems, ready, fns
    torch._dynamo.reset()
    gc.collect()
    return [rows[s] for s in system_names]


def run_benchmarks(
    models: Sequence[str] | None = None,
    systems: Sequence[str] | None = None,
    *,
    repeats: int = 20,
    rounds: int = 5,
    warmup: int = 3,
    min_round_s: float = 0.5,
    max_round_s: float = 5.0,
    threads: int | None = None,
    kiln_target: str = "tvm",
    cold: bool = False,
    out_dir: Path | str | None = None,
    console: Console | None = None,
    progress: bool = True,
    command: str | None = None,
    suite: str = "zoo",
) -> Results:
    """Benchmark `suite`'s `models` (default: all) on `systems`; print, write and return the results.

    `repeats` is the minimum number of timed calls per system per round (a round also lasts
    at least `min_round_s`). `cold=True` makes Inductor compile without its on-disk caches,
    so its prepare time is a first compile. `out_dir=None` writes nothing. Sets torch's
    thread count to `threads` (default: this process's cores) for the rest of the process.
    """
    factories = suite_factories(suite)
    models = list(models or factories)
    systems = list(systems or DEFAULT_SYSTEMS)
    for m in models:
        if m not in factories:
            raise KeyError(f"unknown {suite} model {m!r}; known: {', '.join(factories)}")
    for s in systems:
        if s not in SYSTEMS:
            raise KeyError(f"unknown system {s!r}; known: {', '.join(SYSTEMS)}")
    console = console or Console()
    threads = threads or core_count()
    torch.set_num_threads(threads)
    options = TimingOptions(
        rounds=rounds,
        calls=repeats,
        warmup=warmup,
        min_round_s=min_round_s,
        max_round_s=max_round_s,
    )
    command = command or (
        f"run_benchmarks(models={models}, systems={systems}, repeats={repeats}, rounds={rounds})"
    )
    meta = machine_meta(threads, command)
    meta["inductor_caches"] = "disabled" if cold else "allowed"
    meta["suite"] = suite
    console.print(f"torch threads set to {threads} ({meta['cpu']}); timing {', '.join(systems)}", markup=False, soft_wrap=True)

    rows: list[Row] = []
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("starting", total=len(models) * (len(systems) + rounds))
        for m in models:
            rows += bench_model(
                m,
                systems,
                options,
                kiln_target,
                cold,
                describe=lambda text: bar.update(task, description=text),
                advance=lambda: bar.advance(task),
                suite=suite,
            )

    meta["load_avg_end"] = load_average()
    results = Results(meta=meta, models=models, systems=systems, rows=rows)
    console.print(header_line(meta), markup=False)
    for table in rich_tables(results):
        console.print(table)
    for note in notes(results):
        console.print(f"- {note}", markup=False)
    if out_dir is not None:
        json_path, md_path = write_results(results, out_dir, stem=result_stem(suite))
        console.print(f"wrote {json_path} and {md_path}", markup=False, soft_wrap=True)
        if Path(out_dir).resolve() == COMMITTED_RESULTS:
            console.print("updated the committed results: run `python -m benchmarks.readme_tables` "
                          "to copy them into README.md", markup=False, soft_wrap=True)
        else:
            console.print(f"(the committed {COMMITTED_RESULTS.relative_to(COMMITTED_RESULTS.parents[1])}"
                          f"/{result_stem(suite)}.* change only with --update-results)", markup=False, soft_wrap=True)
    return results


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--suite", choices=SUITES, default="zoo",
                        help="zoo: Kiln's examples; real: the real-model suite (benchmarks/models.py)")
    parser.add_argument("--models", type=_csv, default=None,
                        help="comma-separated models of the suite (default: all)")
    parser.add_argument(
        "--systems", type=_csv, default=list(DEFAULT_SYSTEMS), help="comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=20, help="min timed calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--min-round-s", type=float, default=0.5, help="min seconds per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    parser.add_argument("--kiln-target", default="tvm", help="target passed to compile_model")
    parser.add_argument(
        "--cold", action="store_true", help="Inductor compiles without its on-disk caches"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for latest.* (default: ~/.cache/kiln/bench)"
    )
    parser.add_argument(
        "--update-results", action="store_true",
        help="write the committed benchmarks/results/latest.* (the README's tables)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report", type=Path, default=None,
                        help="also write an offline HTML page of speedups per model and system here")
    args = parser.parse_args(argv)
    try:
        out_dir = results_dir(args.out, args.update_results)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = run_benchmarks(
        args.models,
        args.systems,
        repeats=args.repeats,
        rounds=args.rounds,
        min_round_s=args.min_round_s,
        threads=args.threads,
        kiln_target=args.kiln_target,
        cold=args.cold,
        out_dir=out_dir,
        progress=not args.no_progress,
        command=shlex.join(["python", "-m", "benchmarks.run", *argv]),
        suite=args.suite,
    )
    if args.report is not None:
        from benchmarks.report import to_json_dict
        from compiler.report.bench import write_bench_report

        print(f"wrote {write_bench_report(to_json_dict(results), args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
