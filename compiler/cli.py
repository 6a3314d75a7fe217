"""The `kiln` command line: compile, tune, opt, serve, bench.

Every user error (bad model path, unknown target or pass, malformed IR) prints one line
`error: ...` and exits with code 2; a failed `--check` exits with 1. Tracebacks are for
Kiln's own bugs only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="kiln",
    help="Kiln: compile and tune PyTorch models through an xDSL IR to TVM, Triton or FPGA HLS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: help text is printed verbatim (no rich markup eating `[hls]`), and
    # flags show no `<bool>` value they do not take (typer's rich help prints one).
    rich_markup_mode=None,
)
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    from rich.text import Text  # the message is user text: printed verbatim, never as markup

    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One line `warning: ...` on stderr, verbatim; the command goes on."""
    from rich.text import Text

    err_console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"kiln {version('kiln')}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Kiln compiler toolchain."""


@app.command()
def compile(  # noqa: A001 - the command is called compile
    model: str = typer.Argument(..., help="path/to/file.py:factory; factory() returns (model, example_inputs)"),
    target: str = typer.Option("tvm", "--target", "-t", help="Backend: tvm, triton, hls or eager."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write IR (.mlir) and build artifacts here."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help="Pass pipeline (default: the target's)."),
    check: bool = typer.Option(False, "--check", help="Compare with eager PyTorch; exit 1 on mismatch."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    strict: bool = typer.Option(False, "--strict", help="Fail on ops Kiln cannot compile instead of running them in eager."),
    dump_ir: bool = typer.Option(False, "--dump-ir", help="With --out: write the IR after every pass."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the artifact cache."),
    atol: float = typer.Option(1e-4, help="Absolute tolerance for --check."),
    rtol: float = typer.Option(1e-4, help="Relative tolerance for --check."),
    cache: Optional[str] = typer.Option(
        None, "--cache", help="Tuning cache service URL (default: KILN_CACHE, else the local cache)."
    ),
    part: Optional[str] = typer.Option(None, "--part", help="--target hls: FPGA part (default xcu280-fsvh2892-2L-e)."),
    clock_ns: Optional[float] = typer.Option(None, "--clock-ns", help="--target hls: clock period in ns (default 5)."),
    report: Optional[Path] = typer.Option(
        None, "--report", help="Write one offline HTML page of every decision here (see `kiln report`)."
    ),
) -> None:
    """Compile a model and report ops, kernels, compile time, latency and error against eager."""
    from compiler.commands.compile_cmd import run_compile

    from compiler.commands.progress import stage_progress

    extra = {k: str(v) for k, v in (("part", part), ("clock-ns", clock_ns)) if v is not None}
    with stage_progress(f"kiln compile {model}", err_console, enabled=not as_json) as progress:
        run_compile(model, target, out, pipeline, check, as_json, strict, dump_ir, no_cache, atol, rtol, cache,
                    extra, html_report=report, progress=progress)


@app.command()
def report(
    source: Path = typer.Argument(..., help="A directory written by `kiln compile --out`, or a bench latest.json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML file (default: SOURCE/report.html)."),
) -> None:
    """Render the offline HTML report of a compile (or a benchmark run) written earlier."""
    from compiler.commands.report_cmd import run_report

    run_report(source, output)


@app.command()
def tune(
    model: str = typer.Argument(..., help="path/to/file.py:factory; factory() returns (model, example_inputs)"),
    target: str = typer.Option("tvm", "--target", "-t", help="Backend whose kernels to tune (tvm)."),
    trials: int = typer.Option(12, "--trials", "-n", min=1, help="Measured configurations per kernel."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", min=0, help="Stop after this many seconds."),
    cache: Optional[str] = typer.Option(
        None, "--cache", help="Tuning cache service URL (default: KILN_CACHE, else the local cache)."
    ),
    train_cost_model: bool = typer.Option(
        False, "--train-cost-model", help="Then train the learned cost model on every measurement so far."
    ),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help="Pass pipeline (default: the target's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search (same measurements, same proposals)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds before a candidate counts as hung."),
    retune: bool = typer.Option(False, "--retune", help="Tune kernels that already have a cached record."),
    no_cost_model: bool = typer.Option(False, "--no-cost-model", help="Do not screen with the learned model."),
    no_model_check: bool = typer.Option(
        False, "--no-model-check", help="Store the kernels' winners without timing the whole model with them."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Tune every kernel's knobs (Optuna TPE, learned-model screening) and store the winners."""
    from compiler.commands.tune_cmd import run_tune

    run_tune(model, target, trials, time_budget, cache, train_cost_model, pipeline, seed, timeout,
             retune, no_cost_model, as_json, model_check=not no_model_check)


@app.command()
def opt(
    file: Path = typer.Argument(..., help="Textual kiln IR (.mlir); '-' reads stdin."),
    passes: str = typer.Option("", "--passes", "-p", help='Pass pipeline, e.g. "canonicalize,cse,dce".'),
    verify_each: bool = typer.Option(False, "--verify-each", help="Verify the IR after every pass."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result here instead of stdout."),
) -> None:
    """Run a textual pass pipeline on textual IR and print the result (like mlir-opt)."""
    from compiler.commands.opt_cmd import run_opt

    run_opt(file, passes, verify_each, output)


@app.command()
def serve(
    db: Optional[str] = typer.Option(
        None, "--db", help="sqlite:///path or postgresql://user@host/db (default: SQLite under the user cache dir)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="KILN_SERVE_TOKEN", help="Require 'Authorization: Bearer TOKEN' on writes."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Run the autotuning cache service (HTTP; OpenAPI docs at /docs)."""
    from compiler.commands.serve_cmd import run_serve

    run_serve(db, host, port, token, log_level)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Benchmark the zoo (`--suite real`: the real-model suite): eager, Inductor, ONNX Runtime and Kiln (options as `python -m benchmarks.run --help`)."""
    from benchmarks.run import main as bench_main

    raise typer.Exit(bench_main(list(ctx.args)))


@app.command()
def run(
    model: str = typer.Argument(..., help="path/to/file.py:factory; factory() returns (model, example_inputs)"),
    nproc: int = typer.Option(2, "--nproc", min=1, help="Processes (gloo ranks on loopback)."),
    mesh: Optional[str] = typer.Option(None, "--mesh", help="Device mesh, e.g. 4 or 2x2 (default: --nproc)."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help='Plan, e.g. "shard{mesh=2 solver=ilp}".'),
    check: bool = typer.Option(False, "--check", help="Compare with single-device eager; exit 1 on mismatch."),
    atol: float = typer.Option(1e-4, help="Absolute tolerance for --check."),
    rtol: float = typer.Option(1e-4, help="Relative tolerance for --check."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Process-group timeout in seconds."),
    backend: str = typer.Option("tvm", "--backend", help="What builds each rank's local programs: tvm or eager."),
) -> None:
    """Run a model's parallel plan on N torch.distributed ranks (see compiler/commands/run_cmd.py)."""
    from compiler.commands.run_cmd import run_run

    run_run(model, nproc, mesh, pipeline, check, atol, rtol, as_json, timeout, backend=backend)


@app.command("trace-experts")
def trace_experts(
    model: str = typer.Argument(..., help="path/to/file.py:factory; factory() returns (model, example_inputs)"),
    samples: int = typer.Option(8, "--samples", min=1, help="Calibration inputs drawn like the example inputs."),
    data: Optional[str] = typer.Option(None, "--data", help="torch.save'd list of input tuples (instead of --samples)."),
    out: str = typer.Option(..., "--out", help="Where to write the routing trace (JSON)."),
    seed: int = typer.Option(0, "--seed", help="Seed for drawn inputs."),
) -> None:
    """Record MoE routing (per token, per layer: top-k experts and weights) for place-experts."""
    from compiler.commands.trace_cmd import run_trace

    run_trace(model, samples, data, out, seed)


@app.command()
def calibrate(
    threads: int = typer.Option(2, help="Threads to measure with (the cores Kiln will use)."),
    comm: bool = typer.Option(False, "--comm", help="Measure gloo all_reduce on loopback ranks (alpha-beta) instead."),
    nproc: int = typer.Option(2, "--nproc", min=2, help="With --comm: ranks to measure with."),
) -> None:
    """Measure this CPU (GEMM FLOP/s, memory bandwidth, call overhead) for the cost models."""
    if comm:
        from compiler.distributed.calibrate_comm import calibrate_comm

        with err_console.status(f"measuring gloo all_reduce on {nproc} loopback ranks"):
            link, samples = calibrate_comm(nproc)
        sizes = ", ".join(f"{n / 1024:.0f} KiB {t * 1e3:.2f} ms" for n, t in samples)
        typer.echo(f"gloo all_reduce on {nproc} ranks: {sizes}; alpha {link.alpha_s * 1e6:.1f} us, "
                   f"bandwidth {link.bandwidth / 1e9:.2f} GB/s")
        return
    from cost_models.calibrate import calibrate as run_calibration
    from cost_models.hardware import calibration_path

    with err_console.status(f"measuring GEMM FLOP/s, memory bandwidth and call overhead on {threads} threads"):
        hw = run_calibration(threads)
    typer.echo(
        f"fp32 GEMM {hw.flops() / 1e9:.0f} GFLOP/s, bandwidth {hw.mem_bandwidth / 1e9:.1f} GB/s, "
        f"call overhead {hw.launch_overhead_s * 1e6:.1f} us ({threads} threads); saved to {calibration_path()}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
