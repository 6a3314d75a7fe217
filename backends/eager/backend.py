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
from backends.fresh_outputs import shared_output_positions
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
    shared_outputs: tuple[int, ...] = ()  # constants / inputs returned: cloned per call (fresh_outputs.py)

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            if self.arena is not None:
                outs = self.arena(args, self.program.params)
            else:
                outs = run_function(self.program.forward, args, self.program.params)
            return [o.clone() if i in self.shared_outputs else o for i, o in enumerate(outs)]


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
        return EagerKernel(program, num_kernels=count, arena=arena, shared_outputs=shared_output_positions(program))
