"""What a template hands to code generation: one generated kernel and how to launch it.

`KernelSpec` is everything the host wrapper, the ahead-of-time compiler and the
autotuner need about one `@triton.jit` function: its source, its pointer arguments (and
the tensors behind them), its knobs and its grid. `TemplateContext` is what templates
receive: the literals folded from scalar constants, the knob policy, and the emitter
factory; it is passed down explicitly, never global.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from xdsl.ir import SSAValue

from backends.triton.emitter import POINTER_TYPE, Expr, KernelArg, KernelEmitter
from backends.triton.groups import Group
from backends.triton.knobs import Knobs, default_knobs
from backends.triton.lowering import RULES


@dataclass(frozen=True)
class Scratch:
    """A temporary buffer a template needs between two of its kernels (split-KV partials)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class KernelSpec:
    name: str
    family: str  # pointwise | reduction | matmul | attention | attention-merge
    group: str
    source: str
    args: list[KernelArg]
    knobs: Knobs
    grid: tuple[int, ...]
    scratch: list[Scratch] = field(default_factory=list)
    uses: tuple[str, ...] | None = None  # the knobs this kernel takes (None: all constexpr knobs)

    def constexprs(self) -> dict[str, int]:
        values = self.knobs.constexprs()
        return values if self.uses is None else {k: values[k] for k in self.uses}

    def signature(self) -> dict[str, str]:
        """Triton's AOT signature: pointer types of the arguments, then the constexpr knobs."""
        sig = {a.name: POINTER_TYPE[a.dtype] for a in self.args}
        sig.update({k: "constexpr" for k in self.constexprs()})
        return sig


@dataclass
class TemplateContext:
    scalars: dict[SSAValue, Expr]
    interpret: bool
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> knob values

    def knobs(self, family: str, sizes: dict[str, int]) -> Knobs:
        knobs = default_knobs(family, sizes, self.interpret)
        return dataclasses.replace(knobs, **self.overrides.get(family, {}))

    def emitter(self, name: str, group: Group) -> KernelEmitter:
        return KernelEmitter(name, group.defining(), self.scalars, RULES)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def program_id(axis: int, big: bool) -> str:
    """`tl.program_id`, widened to int64 when offsets can pass 2**31."""
    return f"tl.program_id({axis}).to(tl.int64)" if big else f"tl.program_id({axis})"


BIG = 2**31 - 1
