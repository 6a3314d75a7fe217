"""Tunable knobs of the TVM backend's kernels, and which kernels have them.

A TIR kernel is a fused group (ops sharing a `group` attribute) with no library or
reference call in it; it becomes one PrimFunc named `kiln_group_<id>` (`groups.py`), which
the CPU rules (`schedule.py`) schedule with a `ScheduleOptions`. Those options are the
knobs, declared here as a small table of valid values, so the tuner proposes only valid
configurations and the build rejects any other (`KnobError`). Contractions run as library
calls (`library.py`) and have no knobs here: their kernels are torch's.

Two kinds of knob: threading (threads, the parallel threshold, chunks per thread, how
many outer loops the parallel loop fuses) and loop structure (vector width, a square tile
with a loop order, unrolling). Constraints between knobs are applied by `canonical`: with
one thread the parallel knobs have no effect, and with a fixed `parallel_depth` neither
has `chunks_per_thread`, so those are set to their defaults (the tuner would otherwise
measure the same code many times). The thread count is capped by the threads the build
runs with, since a parallel loop over more chunks than threads only adds work. Which
values can change one kernel's code depends on its loops (a tile must divide them, a
vector wider than every loop is the whole loop): `knob_space.py` answers that per PrimFunc.

The kernel key (`kernel_key_of`) is the functional key of the extracted group
(`ir.hashing`) for this target, with the versions that change what a configuration means:
Kiln's codegen, this table, TVM and Kiln itself.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from xdsl.dialects import func

from ir.core import KilnOp
from ir.ops.sources import ConstantOp, ParamOp
from ir.program import Program

# Bumped whenever a knob's meaning or its values change: old records stop matching.
# 2: loop-structure knobs (vector_lanes, tile, loop_order, parallel_depth, auto_unroll).
KNOBS_VERSION = "2"

# Ops the lowering sends to the library path or that have no TIR lowering of their own:
# a group holding one of them is not a TIR kernel (its contraction is torch's).
LIBRARY_OPS = frozenset(
    {"kiln.linear", "kiln.matmul", "kiln.conv2d", "kiln.attention", "kiln.embedding"}
)


class KnobError(ValueError):
    """A configuration with an unknown knob or a value outside its declared range."""


@dataclass(frozen=True)
class Knob:
    name: str
    values: tuple[int, ...]
    default: int
    doc: str


# The knobs of a TIR kernel: fields of `ScheduleOptions` (loop_steps.py). Defaults are the
# hand-tuned ones there; a knob whose field `ScheduleOptions` lacks is left out (`KNOBS`),
# so the table may list a field under an old and a new name.
TABLE: tuple[Knob, ...] = (
    Knob("num_threads", (1, 2, 4, 8), 2, "threads a parallel loop is split for (1: serial)"),
    Knob(
        "min_parallel_work",
        (1 << 15, 1 << 17, 1 << 19, 1 << 21, 1 << 23),
        1 << 19,
        "block work (iterations x body expression nodes) below which a block stays serial",
    ),
    Knob(  # the same threshold in iterations, as ScheduleOptions had it before
        "min_parallel_elems",
        (1024, 4096, 16384, 65536, 262144),
        16384,
        "iterations below which a kernel stays serial (a fork/join costs microseconds)",
    ),
    Knob("chunks_per_thread", (1, 2, 4, 8, 16), 4, "parallel chunks per thread (load balance)"),
    Knob(
        "parallel_depth",
        (0, 1, 2, 3),
        0,
        "outer loops fused into the parallel loop (0: the fewest giving threads x chunks chunks)",
    ),
    Knob(
        "vector_lanes",
        (0, 4, 8, 16, 32),
        0,
        "lanes of a vector loop in 32-bit elements (0: the target's SIMD width); one that does "
        "not divide a loop leaves a scalar tail",
    ),
    Knob("tile", (0, 8, 16, 32, 64), 0, "square tile of an injective block's two inner loops (0: none)"),
    Knob(
        "loop_order",
        (0, 1),
        0,
        "1: swap an injective block's two inner loops; keep a column reduction's reduction innermost",
    ),
    Knob("auto_unroll", (0, 16, 64, 512), 0, "pragma_auto_unroll_max_step of each root loop (0: off)"),
)

# Knobs that only matter when a kernel runs a parallel loop.
PARALLEL_KNOBS = frozenset(
    {"min_parallel_work", "min_parallel_elems", "chunks_per_thread", "parallel_depth"}
)
# The parallel threshold, under its old (iterations) and new (work) names.
THRESHOLDS = frozenset({"min_parallel_work", "min_parallel_elems"})
# The threading knobs the table had before the loop-structure ones (`all_configs`' default).
THREADING = ("num_threads", "min_parallel_work", "min_parallel_elems", "chunks_per_thread")


def _declared() -> tuple[Knob, ...]:
    from backends.tvm.loop_steps import ScheduleOptions

    fields = {f.name: f.default for f in dataclasses.fields(ScheduleOptions)}
    return tuple(dataclasses.replace(k, default=fields[k.name]) for k in TABLE if k.name in fields)


KNOBS: tuple[Knob, ...] = _declared()


def knob_values(max_threads: int) -> dict[str, tuple[int, ...]]:
    """Each knob's valid values on a machine running `max_threads` threads."""
    out = {}
    for k in KNOBS:
        values = tuple(v for v in k.values if k.name != "num_threads" or v <= max_threads)
        out[k.name] = values or (1,)
    return out


def default_config(max_threads: int = 2) -> dict[str, int]:
    config = {k.name: k.default for k in KNOBS}
    if "num_threads" in config:
        config["num_threads"] = min(config["num_threads"], max_threads)
    return canonical(config, max_threads)


def canonical(config: Mapping[str, Any], max_threads: int = 2) -> dict[str, int]:
    """`config` checked against the table, missing knobs at their defaults, and knobs that
    cannot matter (parallel knobs of a serial kernel, chunks under a fixed parallel depth)
    at their defaults too. Per-kernel constraints: `knob_space.KernelKnobs.canonical`."""
    values = knob_values(max_threads)
    unknown = sorted(set(config) - set(values))
    if unknown:
        raise KnobError(f"unknown TVM knob(s) {unknown}; known: {sorted(values)}")
    out = {}
    for k in KNOBS:
        value = config.get(k.name, k.default)
        if k.name == "num_threads" and k.name not in config:
            value = min(value, max_threads)
        if isinstance(value, bool) or not isinstance(value, int) or value not in values[k.name]:
            raise KnobError(f"TVM knob {k.name}={value!r} is not one of {list(values[k.name])}")
        out[k.name] = value
    defaults = {k.name: k.default for k in KNOBS}
    if out.get("num_threads", 2) == 1:
        out.update({name: defaults[name] for name in PARALLEL_KNOBS if name in out})
    if out.get("parallel_depth", 0) and "chunks_per_thread" in out:
        out["chunks_per_thread"] = defaults["chunks_per_thread"]
    return out


def all_configs(max_threads: int = 2, names: Iterable[str] = THREADING) -> list[dict[str, int]]:
    """Every distinct valid configuration of the knobs `names` (the others at their
    defaults), defaults first. The threading knobs alone make tens; every knob together
    makes tens of thousands, which is why the tuner samples instead (`knob_space.py`)."""
    values = {n: v for n, v in knob_values(max_threads).items() if n in set(names)}
    seen: dict[str, dict[str, int]] = {}
    for combo in itertools.product(*values.values()):
        config = canonical(dict(zip(values, combo)), max_threads)
        seen.setdefault(config_id(config), config)
    first = default_config(max_threads)
    return [first] + [c for c in seen.values() if c != first]


def config_id(config: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


# Threshold knobs in the units of `loop_steps.block_work`, whose per-iteration factor
# (expression nodes in a block body) is capped at this many.
MAX_NODES_PER_ITERATION = 64


def parallel_threshold(config: Mapping[str, Any]) -> tuple[int, str] | None:
    """The config's parallel threshold and its unit ("work" or "iterations"), if it has one."""
    if "min_parallel_work" in config:
        return int(config["min_parallel_work"]), "work"
    if "min_parallel_elems" in config:
        return int(config["min_parallel_elems"]), "iterations"
    return None


def stays_serial(config: Mapping[str, Any], max_iterations: int) -> bool:
    """Whether `config` keeps every block of a kernel of at most `max_iterations` serial.

    Exact, not estimated: a block's work is at most its iterations times the node cap.
    """
    if config.get("num_threads", 2) < 2:
        return True
    threshold = parallel_threshold(config)
    if threshold is None:
        return False
    value, unit = threshold
    bound = max_iterations * (MAX_NODES_PER_ITERATION if unit == "work" else 1)
    return value > bound


def schedule_options(config: Mapping[str, Any], max_threads: int = 2):
    """The `ScheduleOptions` a configuration stands for."""
    from backends.tvm.loop_steps import ScheduleOptions

    return ScheduleOptions(**canonical(config, max_threads))


# ---- which kernels have knobs ------------------------------------------------------------


@dataclass(frozen=True)
class KernelSite:
    """One TIR kernel of a program: its PrimFunc name, its group and its ops in order."""

    name: str
    group: int
    ops: tuple[KilnOp, ...]


def lowers_to_tir(ops: list[KilnOp] | tuple[KilnOp, ...]) -> bool:
    """Whether a group becomes one scheduled PrimFunc (no library or reference call)."""
    from backends.tvm.lower import TABLE

    return all(
        op.name not in LIBRARY_OPS and (op.name in TABLE or op.name == "kiln.batch_norm")
        for op in ops
    )


def tir_kernels(program: Program) -> list[KernelSite]:
    """The program's TIR kernels, one per group with a `group` attribute, in program order."""
    groups: dict[int, list[KilnOp]] = {}
    for op in program.forward.body.block.ops:
        if isinstance(op, (ParamOp, ConstantOp, func.ReturnOp)) or not isinstance(op, KilnOp):
            continue
        group = op.attributes.get("group")
        if group is not None:
            groups.setdefault(group.value.data, []).append(op)
    return [
        KernelSite(f"kiln_group_{gid}", gid, tuple(ops))
        for gid, ops in groups.items()
        if lowers_to_tir(ops)
    ]


def kernel_versions() -> dict[str, str]:
    """What a tuned configuration depends on besides the kernel and the target."""
    from backends.tvm.backend import CODEGEN_VERSION

    return {
        "kiln-tvm-codegen": CODEGEN_VERSION,
        "kiln-tvm-knobs": KNOBS_VERSION,
        "kiln": version("kiln"),
        "apache-tvm": version("apache-tvm"),
    }


def extract_site(site: KernelSite, program: Program) -> Program:
    from ir.extract import extract

    return extract(list(site.ops), program.params)


def kernel_key_of(site: KernelSite, program: Program, target: str) -> str:
    from ir.hashing import kernel_key

    return kernel_key(extract_site(site, program), target, kernel_versions())
