"""Hardware specs as data: peak FLOP/s, memory bandwidth, launch overhead, on-chip limits.

The CPU entry is this machine's, measured by `kiln calibrate` (`calibrate.py`) and cached
in the user cache dir; until it is measured, the defaults below (measured once on this
machine class, see ENVIRONMENT.md) are used. GPU and FPGA entries are datasheet numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Hardware:
    name: str
    kind: str  # "cpu" | "gpu" | "fpga"
    peak_flops: dict[str, float]  # dtype -> FLOP/s
    mem_bandwidth: float  # bytes/s from main memory (DRAM or HBM)
    launch_overhead_s: float  # fixed cost of one kernel (dispatch, fork/join, launch)
    on_chip_bytes: int = 0  # L2 / shared memory per SM / BRAM, for tiling checks
    extra: dict[str, float] = field(default_factory=dict)

    def flops(self, dtype: str = "float32") -> float:
        return self.peak_flops.get(dtype, self.peak_flops["float32"])


# This machine class: 2 cores of an AVX-512 CPU. fp32 GEMM ~200 GFLOP/s through BLAS,
# STREAM-style bandwidth ~35 GB/s, ~5 us per VM kernel call (ENVIRONMENT.md, NOTES.md).
CPU_DEFAULT = Hardware(
    name="cpu",
    kind="cpu",
    peak_flops={"float32": 200e9, "float16": 200e9, "bfloat16": 200e9, "int8": 400e9},
    mem_bandwidth=35e9,
    launch_overhead_s=5e-6,
    on_chip_bytes=1 << 20,
)

A100 = Hardware(
    name="a100",
    kind="gpu",
    peak_flops={"float32": 19.5e12, "tf32": 156e12, "float16": 312e12, "bfloat16": 312e12, "int8": 624e12},
    mem_bandwidth=2.039e12,
    launch_overhead_s=4e-6,
    on_chip_bytes=164 * 1024,  # shared memory per SM
    extra={"sms": 108, "registers_per_sm": 65536, "l2_bytes": 40 * 2**20},
)

H100 = Hardware(
    name="h100",
    kind="gpu",
    peak_flops={"float32": 67e12, "tf32": 495e12, "float16": 990e12, "bfloat16": 990e12,
                "float8_e4m3fn": 1979e12, "int8": 1979e12},
    mem_bandwidth=3.35e12,
    launch_overhead_s=3e-6,
    on_chip_bytes=228 * 1024,
    extra={"sms": 132, "registers_per_sm": 65536, "l2_bytes": 50 * 2**20},
)

# Alveo U280 (xcu280-fsvh2892-2L-e): resources from the datasheet; FLOP/s at 300 MHz with
# one fp32 MAC per 3 DSPs is a rough ceiling used only for ranking.
U280 = Hardware(
    name="u280",
    kind="fpga",
    peak_flops={"float32": 2 * 9024 / 3 * 300e6, "int8": 2 * 9024 * 2 * 300e6},
    mem_bandwidth=460e9,
    launch_overhead_s=1e-6,
    on_chip_bytes=int((2016 * 36 * 1024 + 960 * 288 * 1024) / 8),
    extra={"dsp": 9024, "bram_18k": 4032, "uram": 960, "lut": 1_303_680, "ff": 2_607_360, "clock_mhz": 300},
)

SPECS: dict[str, Hardware] = {h.name: h for h in (CPU_DEFAULT, A100, H100, U280)}


def calibration_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kiln")) / "calibration.json"


def get_hardware(name: str) -> Hardware:
    """A spec by name; "cpu" is the calibrated one when `kiln calibrate` has run."""
    if name not in SPECS:
        raise ValueError(f"unknown hardware {name!r}; known: {', '.join(sorted(SPECS))}")
    if name == "cpu":
        return load_calibrated() or CPU_DEFAULT
    return SPECS[name]


def load_calibrated(path: Path | None = None) -> Hardware | None:
    path = path or calibration_path()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return replace(CPU_DEFAULT, **{k: data[k] for k in ("peak_flops", "mem_bandwidth", "launch_overhead_s") if k in data})
    except (ValueError, KeyError, TypeError):
        return None  # a corrupt calibration is ignored, never fatal


def save_calibrated(hw: Hardware, path: Path | None = None) -> Path:
    path = path or calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(hw), indent=2))
    return path
