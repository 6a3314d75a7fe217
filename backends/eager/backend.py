"""Eager backend: the reference interpreter as a backend.

It runs anything that verifies, so it is the fallback target and the baseline that
other backends' numerics are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from backends.base import BuildOptions, Capabilities
from backends.eager.arena import ArenaInterpreter, arena_bytes
from ir.dialect import OPS_BY_NAME
from ir.interpreter import run_function
from ir.program import Program


@dataclass
class EagerKernel:
    program: Program
    num_kernels: int
    cache_hit: bool = False
    artifacts: dict[str, Path] = field(default_factory=dict)

    arena: ArenaInterpreter | None = None  # set when `map-memory` planned one arena

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            if self.arena is not None:
                return self.arena(args, self.program.params)
            return run_function(self.program.forward, args, self.program.params)


class EagerBackend:
    name = "eager"

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(OPS_BY_NAME))

    def pipeline(self) -> str:
        from passes import DEFAULT_PIPELINE

        return DEFAULT_PIPELINE

    def build(self, program: Program, options: BuildOptions) -> EagerKernel:
        count = sum(1 for op in program.kiln_ops() if op.name not in ("kiln.param", "kiln.constant"))
        size = arena_bytes(program.module)
        arena = ArenaInterpreter(program.forward, size) if size is not None else None
        return EagerKernel(program, num_kernels=count, arena=arena)
