"""The protocol every backend implements: capabilities, its own pass pipeline, build.

A backend receives a kiln `Program` whose decisions (fusion groups, formats, ...) are
already attributes on the ops; it reads them and never recomputes them. `build`
returns a `Kernel`: a callable over flat tensors with what the report needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ir.program import Program


class BackendError(RuntimeError):
    """A backend could not lower or build a program; the message names the op."""


class KernelConfigs(Protocol):
    """Where a build finds tuned configurations: the autotuning cache, or the one a tuner
    is measuring. `None` means "no tuned configuration": the backend's defaults."""

    def config_for(self, key: str, target: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class BuildOptions:
    """What the driver tells a backend; frozen so a build cannot change the caller's view."""

    cache_dir: Path | None = None  # artifact cache; None disables it
    out_dir: Path | None = None  # where to write artifacts for inspection
    num_threads: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    kernel_configs: KernelConfigs | None = None  # tuned knobs by kernel key; None: defaults


@dataclass(frozen=True)
class Capabilities:
    ops: frozenset[str]  # kiln op names the backend lowers
    fusible: frozenset[str] = frozenset()  # kinds of fused groups it can emit as one kernel
    eager_fallback: bool = True  # False: every op must lower (an FPGA design has no host path)


class Kernel(Protocol):
    """A built partition: flat tensors in, flat tensors out."""

    num_kernels: int
    cache_hit: bool
    artifacts: dict[str, Path]

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]: ...


class Backend(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def pipeline(self) -> str:
        """The target's pass pipeline (text); the driver runs it before `build`."""
        ...

    def build(self, program: Program, options: BuildOptions) -> Kernel: ...
