"""Tunable knobs of the TVM backend's kernels, and which kernels have them.

A TIR kernel is a fused group (ops sharing a `group` attribute) with no library or
reference call in it; it becomes one PrimFunc named `kiln_group_<id>` (`groups.py`), which
the CPU rules (`schedule.py`) schedule with a `ScheduleOptions`. Those options are the
knobs, declared here as a small table of valid values, so the tuner proposes only valid
configurations and the build rejects any other (`KnobError`). Contractions run as library
calls (`library.py`) and have no knobs here: their kernels are torch's.

Constraints between knobs are applied by `canonical`: with one thread the parallel knobs
have no effect, so every single-thread configuration is the same one (the tuner would
otherwise measure the same code many times). The thread count is capped by the threads
the build runs with, since a parallel loop over more chunks than threads only adds work.

The kernel key (`kernel_key_of`) is the functional key of the extracted group
(`ir.hashing`) for this target, with the versions that change what a configuration means:
Kiln's codegen, this table, TVM and Kiln itself.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from xdsl.dialects import func

from ir.core import KilnOp
from ir.ops.sources import ConstantOp, ParamOp
from ir.program import Program

# Bumped whenever a knob's meaning or its values change: old records stop matching.
KNOBS_VERSION = "1"

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
)


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
    cannot matter (parallel knobs of a serial kernel) at their defaults too."""
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
    if out.get("num_threads", 2) == 1:
        for k in KNOBS:
            if k.name != "num_threads":
                out[k.name] = k.default
    return out


def all_configs(max_threads: int = 2) -> list[dict[str, int]]:
    """Every distinct valid configuration, defaults first (small: tens of entries)."""
    values = knob_values(max_threads)
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
