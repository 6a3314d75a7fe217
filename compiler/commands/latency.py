"""Eager against Kiln latency for `kiln compile`: interleaved rounds, the spread, and a
warning when the numbers cannot be trusted.

`kiln compile` once printed "speedup 528x" for mlp on a busy two-core machine: eager PyTorch
runs its OpenMP pool on both cores, and when another process holds one of them each call
waits at the pool's barrier (47.9 ms against 0.22 ms on a quiet machine) while Kiln's serial
kernels do not. A single ratio hides that. So the report gives each side's median with its
p10-p90 band, the speedup of every round (both sides timed in the same round see the same
load), the load average, and a one-line warning when the machine is busy or the spread is
wide. Triton's CPU interpreter and HLS C simulation emulate the kernels, so their latency is
not a speed: the report says which it is instead of a speedup.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from benchmarks.timing import TimingOptions, TimingStats, time_interleaved

# Enough rounds for a spread (7 x ~0.1 s per side); the emulated modes only need a figure.
NATIVE_TIMING = TimingOptions(rounds=7, calls=10, warmup=3, min_round_s=0.1, max_round_s=1.0)
EMULATED_TIMING = TimingOptions(rounds=3, calls=2, warmup=1, min_round_s=0.0, max_round_s=1.0)
# A round's speedup outside [median / WIDE, median * WIDE], or a side whose p90 is WIDE
# times its p10, means the rounds disagree: the machine was not quiet.
WIDE = 1.5


class TimingFailed(RuntimeError):
    """A timed call raised: `side` is "eager" or "kiln", `error` what it raised."""

    def __init__(self, side: str, error: Exception) -> None:
        super().__init__(f"running {side} failed: {type(error).__name__}: {error}")
        self.side, self.error = side, error


def timing_mode(target: str) -> str:
    """'native', or what runs instead of the target's hardware (then there is no speedup)."""
    if target == "hls":
        return "C simulation"
    if target == "triton" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "interpreter"  # set by the Triton backend when no GPU is present
    return "native"


def measure(eager: Callable[[], object], kiln: Callable[[], object], mode: str) -> dict[str, Any]:
    """Time both callables interleaved and return the report fields; TimingFailed if one raised."""
    options = NATIVE_TIMING if mode == "native" else EMULATED_TIMING
    load_before = _load()
    stats = time_interleaved({"eager": eager, "kiln": kiln}, options)
    for name, s in stats.items():
        if isinstance(s, Exception):
            raise TimingFailed(name, s)
    e, k = stats["eager"], stats["kiln"]
    assert isinstance(e, TimingStats) and isinstance(k, TimingStats)
    load = max(load_before, _load())
    out: dict[str, Any] = {
        "eager_ms": e.median_ms, "kiln_ms": k.median_ms,
        "eager_p10_ms": e.p10_ms, "eager_p90_ms": e.p90_ms,
        "kiln_p10_ms": k.p10_ms, "kiln_p90_ms": k.p90_ms,
        "timing_rounds": options.rounds, "timing_mode": mode,
        "load_avg": load, "cpus": _cpus(),
    }
    if mode != "native":  # no speedup; the eager figure can still be spoiled by a busy machine
        out.update(speedup=None, speedup_range=None, timing_warning=busy_warning(load, _cpus(), e, k, []))
        return out
    ratios = sorted(a / b for a, b in zip(e.round_medians_ms, k.round_medians_ms) if b > 0)
    out["speedup"] = e.median_ms / k.median_ms if k.median_ms else float("nan")
    out["speedup_range"] = [ratios[0], ratios[-1]] if ratios else None
    out["timing_warning"] = busy_warning(load, _cpus(), e, k, ratios)
    return out


def busy_warning(load: float, cpus: int, eager: TimingStats, kiln: TimingStats,
                 ratios: list[float]) -> str | None:
    """One line when the latencies are not trustworthy, else None."""
    reasons = []
    others = load - 1.0  # this process is one runnable task of the load average
    if others >= cpus / 2:
        reasons.append(f"load average {load:.1f} on {cpus} cores")
    for name, s in (("eager", eager), ("kiln", kiln)):
        if s.p10_ms > 0 and s.p90_ms / s.p10_ms > WIDE:
            reasons.append(f"{name} p10-p90 {s.p10_ms:.3g}-{s.p90_ms:.3g} ms")
    if ratios and ratios[0] > 0 and ratios[-1] / ratios[0] > WIDE * WIDE:
        reasons.append(f"round speedups {ratios[0]:.2f}-{ratios[-1]:.2f}x")
    if not reasons:
        return None
    return ("the machine is busy or noisy (" + "; ".join(reasons) + "): latency and speedup are "
            "unreliable; rerun on a quiet machine")


def latency_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The report table's eager / kiln / speedup rows."""
    def band(name: str) -> str:
        return (f"{report[f'{name}_ms']:.3f} ms (p10-p90 {report.get(f'{name}_p10_ms', 0.0):.3f}-"
                f"{report.get(f'{name}_p90_ms', 0.0):.3f} ms)")

    mode = report.get("timing_mode", "native")
    if mode == "interpreter":
        speed = "n/a: kernels ran in Triton's CPU interpreter (an emulation, not a speed)"
    elif mode == "C simulation":
        speed = "n/a: the design ran as C simulation on the host CPU (not FPGA latency; see hls)"
    else:
        speed = f"{report['speedup']:.2f}x"
        if report.get("speedup_range"):
            lo, hi = report["speedup_range"]
            speed += f" (rounds {lo:.2f}-{hi:.2f}x, {report.get('timing_rounds')} interleaved rounds)"
        if report.get("timing_warning"):
            speed += " UNRELIABLE: busy machine"
    return [("eager", band("eager")), ("kiln", band("kiln") + ("" if mode == "native" else f" ({mode})")),
            ("speedup", speed)]


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
