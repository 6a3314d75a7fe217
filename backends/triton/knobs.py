"""Tunable knobs of each Triton kernel family: defaults, valid ranges, and the default choice.

Every BLOCK_* knob is a `tl.constexpr` parameter of the generated kernel (so a new value
is a new specialization, never a new template); `num_warps` and `num_stages` are launch
options. The autotuner searches `SPACE` of a family; `default_knobs` is what a build uses
before any tuning: sizes clamped to the problem (no 128-wide tile for an 8-row matrix),
and larger blocks under the interpreter, where each program instance costs Python time
and registers cost nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

POW2 = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
WARPS = (1, 2, 4, 8, 16)
STAGES = (1, 2, 3, 4, 5)


class KnobError(ValueError):
    """A knob value outside its family's declared range."""


@dataclass(frozen=True)
class Knobs:
    num_warps: int = 4
    num_stages: int = 1
    SPACE: ClassVar[dict[str, tuple[Any, ...]]] = {"num_warps": WARPS, "num_stages": STAGES}
    FAMILY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for name, allowed in self.SPACE.items():
            value = getattr(self, name)
            if value not in allowed:
                raise KnobError(
                    f"{self.FAMILY} knob {name}={value!r} is not one of {list(allowed)}"
                )

    def constexprs(self) -> dict[str, Any]:
        """The knobs passed to the kernel as `tl.constexpr` arguments (everything upper-case)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.isupper()}

    def launch(self) -> dict[str, int]:
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}


@dataclass(frozen=True)
class PointwiseKnobs(Knobs):
    BLOCK: int = 1024
    SPACE: ClassVar = {"BLOCK": POW2, "num_warps": WARPS, "num_stages": (1,)}
    FAMILY: ClassVar[str] = "pointwise"


@dataclass(frozen=True)
class ReductionKnobs(Knobs):
    ROWS: int = 1  # rows per program (several short rows share a program)
    BLOCK_N: int = 1024  # columns of a row processed per loop iteration
    SPACE: ClassVar = {
        "ROWS": (1, 2, 4, 8, 16, 32, 64, 128, 256),
        "BLOCK_N": POW2,
        "num_warps": WARPS,
        "num_stages": (1, 2),
    }
    FAMILY: ClassVar[str] = "reduction"


@dataclass(frozen=True)
class MatmulKnobs(Knobs):
    BLOCK_M: int = 64
    BLOCK_N: int = 64
    BLOCK_K: int = 32
    GROUP_M: int = 8  # rows of tiles launched together, for L2 reuse of the B operand
    num_warps: int = 4
    num_stages: int = 3
    input_precision: str = "ieee"  # "tf32" trades fp32 accuracy (~1e-3) for tensor cores
    SPACE: ClassVar = {
        "BLOCK_M": POW2[:5],
        "BLOCK_N": POW2[:5],
        "BLOCK_K": POW2[:5],
        "GROUP_M": (1, 2, 4, 8, 16),
        "num_warps": WARPS[1:4],
        "num_stages": STAGES,
        "input_precision": ("ieee", "tf32", "tf32x3"),
    }
    FAMILY: ClassVar[str] = "matmul"


@dataclass(frozen=True)
class AttentionKnobs(Knobs):
    BLOCK_M: int = 64  # queries per program
    BLOCK_N: int = 64  # keys per inner iteration
    NUM_SPLITS: int = 8  # decode (one query): key splits merged by a second kernel
    num_warps: int = 4
    num_stages: int = 2
    input_precision: str = "ieee"
    SPACE: ClassVar = {
        "BLOCK_M": POW2[:4],
        "BLOCK_N": POW2[:5],
        "NUM_SPLITS": (1, 2, 4, 8, 16, 32, 64),
        "num_warps": WARPS[1:4],
        "num_stages": STAGES,
        "input_precision": ("ieee", "tf32", "tf32x3"),
    }
    FAMILY: ClassVar[str] = "attention"


def check_group_block_k(knobs: MatmulKnobs, group: int, where: str = "") -> None:
    """A matmul that dequantizes a group-wise weight in its K loop needs BLOCK_K to divide
    the group (one scale per column per K block) or be a multiple of it (a few scales per
    column, one per group). Otherwise K blocks would straddle groups unevenly. Per-channel
    and per-tensor scales (group <= 0) constrain nothing."""
    if group > 0 and knobs.BLOCK_K % group and group % knobs.BLOCK_K:
        raise KnobError(
            f"matmul knob BLOCK_K={knobs.BLOCK_K} neither divides nor is a multiple of the "
            f"quantization group size {group}{f' of {where}' if where else ''}"
        )


FAMILIES: dict[str, type[Knobs]] = {
    "pointwise": PointwiseKnobs,
    "reduction": ReductionKnobs,
    "matmul": MatmulKnobs,
    "attention": AttentionKnobs,
}


def next_pow2(n: int, lo: int = 16) -> int:
    p = lo
    while p < n:
        p *= 2
    return p


def default_knobs(family: str, sizes: dict[str, int], interpret: bool) -> Knobs:
    """The untuned choice for one kernel; `sizes` are its problem sizes (numel, M, N, K, L, S)."""
    if family == "pointwise":
        cap = 16384 if interpret else 1024
        block = min(next_pow2(sizes["numel"]), cap)
        return PointwiseKnobs(BLOCK=block, num_warps=4 if block >= 512 else 2)
    if family == "reduction":
        block = min(next_pow2(sizes["N"]), 16384 if interpret else 2048)
        # Fill a tile of ~64K (interpreter) or ~4K (GPU registers) elements with whole rows.
        rows = max(1, min(next_pow2(sizes["R"], 1), (65536 if interpret else 4096) // block, 256))
        return ReductionKnobs(ROWS=rows, BLOCK_N=block, num_warps=8 if block * rows >= 4096 else 4)
    if family == "matmul":
        cap = 256 if interpret else 64
        return MatmulKnobs(
            BLOCK_M=min(next_pow2(sizes["M"]), cap),
            BLOCK_N=min(next_pow2(sizes["N"]), cap),
            BLOCK_K=min(next_pow2(sizes["K"]), 256 if interpret else 32),
        )
    if family == "attention":
        cap = 128 if interpret else 64
        splits = 1 if interpret else max(1, min(16, sizes["S"] // 256))
        return AttentionKnobs(
            BLOCK_M=min(next_pow2(sizes["L"]), cap),
            BLOCK_N=min(next_pow2(sizes["S"]), 256 if interpret else 64),
            NUM_SPLITS=_pow2_floor(splits),
        )
    raise KeyError(f"no knobs for kernel family {family!r}; known: {sorted(FAMILIES)}")


def _pow2_floor(n: int) -> int:
    p = 1
    while p * 2 <= n:
        p *= 2
    return p
