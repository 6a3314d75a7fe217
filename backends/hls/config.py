"""The HLS backend's options, read once from `BuildOptions.extra` (the CLI's `--part` and
`--clock-ns` land there, as do `torch.compile(options={"extra": {...}})` values).

Keys: `part` (an FPGA part, see `cost_models.fpga.PARTS`), `clock-ns` (target clock
period), `precision` (the uniform default type, `fixed<16,6>` like hls4ml's), `table-size`
(entries of each activation lookup table), `verify` (`exact`: every call also runs the
emulation and raises on any difference; what `kiln compile --check` asks for).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.base import BackendError
from cost_models.fpga import DEFAULT_PART, get_part
from ir.quant.fixed import FixedPoint

DEFAULT_PRECISION = "fixed<16,6>"
DEFAULT_CLOCK_NS = 5.0


@dataclass(frozen=True)
class HLSConfig:
    part: str = DEFAULT_PART
    clock_ns: float = DEFAULT_CLOCK_NS
    precision: FixedPoint = field(default_factory=lambda: FixedPoint.parse(DEFAULT_PRECISION))
    table_size: int = 1024
    verify: bool = False
    top: str = "kiln_top"

    @staticmethod
    def from_extra(extra: dict[str, str]) -> HLSConfig:
        try:
            part = str(extra.get("part", DEFAULT_PART))
            get_part(part)
            clock = float(extra.get("clock-ns", DEFAULT_CLOCK_NS))
            precision = FixedPoint.parse(str(extra.get("precision", DEFAULT_PRECISION)))
            table_size = int(extra.get("table-size", 1024))
        except ValueError as err:
            raise BackendError(f"hls: {err}") from None
        if clock <= 0:
            raise BackendError(f"hls: clock-ns must be > 0, got {clock}")
        verify = str(extra.get("verify", "")).lower()
        if verify not in ("", "exact", "none"):
            raise BackendError(f"hls: verify must be 'exact' or 'none', got {verify!r}")
        return HLSConfig(part, clock, precision, table_size, verify == "exact")
