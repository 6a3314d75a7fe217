"""The base of every kiln op: shape inference, verification, cost counts, reference.

An op class declares its operands and properties with IRDL (as xDSL's own dialects
do) and adds four small methods:

- `infer_types(operand_types, options)`: result types from operand types, so capture
  never guesses a shape and the verifier can re-check every op;
- `flops()` and `bytes_moved()`: what the cost models read;
- `reference(*tensors)`: the semantics, in eager torch, used by the interpreter.

`make(*operands, **options)` creates a fully-typed op from Python values; it is how
capture, passes and tests make ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation
from xdsl.traits import OpTrait
from xdsl.utils.exceptions import VerifyException

from ir import dtypes
from ir.attrs import PyValue, from_attr, to_attr

# Properties that are decisions made by passes, not part of an op's semantics.
DECISION_ATTRS = ("group", "quant", "sharding", "memory", "placement")
# Structural properties xDSL keeps for ops with several optional operands.
STRUCTURAL_ATTRS = ("operandSegmentSizes",)


@dataclass(frozen=True)
class Elementwise(OpTrait):
    """Each output element depends only on the same element of each (broadcast) input."""


@dataclass(frozen=True)
class Reduction(OpTrait):
    """Reduces one or more dims (softmax and norms reduce a row then map it)."""


@dataclass(frozen=True)
class Contraction(OpTrait):
    """A multiply-accumulate over a shared dim: matmul, linear, conv, attention."""


@dataclass(frozen=True)
class DataMovement(OpTrait):
    """Moves or copies elements without arithmetic: reshape, permute, slice, concat."""


@dataclass(frozen=True)
class Routing(OpTrait):
    """Token routing for mixture-of-experts: top-k, dispatch, combine."""


class KilnOp(IRDLOperation):
    """Mixin for every `kiln.*` op; see the module docstring."""

    # Per-element arithmetic cost used by the default `flops()` (1 for add, ~8 for gelu).
    FLOPS_PER_ELEMENT: ClassVar[int] = 1

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def infer_types(
        cls, operand_types: Sequence[TensorType], options: dict[str, PyValue]
    ) -> list[TensorType]:
        raise NotImplementedError(f"{cls.name} does not infer its result types")

    @classmethod
    def make(cls, *operands: SSAValue | Operation | None, **options: Any):
        """Make the op from SSA values and Python options, with inferred result types.

        `None` operands stand for absent optional operands (e.g. a linear's bias).
        """
        values = [SSAValue.get(o) if o is not None else None for o in operands]
        present = [v for v in values if v is not None]
        opts = {k: v for k, v in options.items() if v is not None}
        try:
            result_types = cls.infer_types([v.type for v in present], opts)  # type: ignore[arg-type]
        except INFERENCE_ERRORS as err:
            raise ValueError(_naming(cls.name, err)) from err
        props = {k: to_attr(v) for k, v in opts.items()}
        return cls.create(
            operands=present,
            result_types=result_types,
            properties=props,
        )

    # ---- options --------------------------------------------------------------------
    def opt(self, key: str, default: PyValue | None = None) -> Any:
        """Python value of a property, or `default` when it is absent."""
        attr = self.properties.get(key)
        return default if attr is None else from_attr(attr)

    def options(self) -> dict[str, PyValue]:
        """All semantic properties (decisions excluded) as Python values."""
        return {k: from_attr(v) for k, v in self.properties.items() if k not in DECISION_ATTRS + STRUCTURAL_ATTRS}

    # ---- verification ---------------------------------------------------------------
    def verify_(self) -> None:
        try:
            expected = type(self).infer_types(
                [o.type for o in self.operands], self.options()  # type: ignore[misc]
            )
        except INFERENCE_ERRORS as err:
            raise VerifyException(_naming(self.name, err)) from err
        actual = [r.type for r in self.results]
        if list(expected) != actual:
            raise VerifyException(
                f"{self.name}: result types {[str(t) for t in actual]} do not match the "
                f"inferred {[str(t) for t in expected]}"
            )

    # ---- costs ----------------------------------------------------------------------
    def flops(self) -> int:
        return sum(dtypes.numel(r.type) for r in self.results) * self.FLOPS_PER_ELEMENT

    def bytes_moved(self) -> int:
        """Bytes read plus written if the op runs alone (no fusion, no reuse)."""
        ins = sum(dtypes.nbytes(o.type) for o in self.operands)
        outs = sum(dtypes.nbytes(r.type) for r in self.results)
        return ins + outs

    # ---- semantics ------------------------------------------------------------------
    def reference(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        raise NotImplementedError(f"{self.name} has no reference implementation")


# What shape inference raises on bad operands or options (a missing option is a KeyError,
# an unknown dtype name an AttributeError); `make` and `verify_` report them all naming the op.
INFERENCE_ERRORS = (ValueError, IndexError, TypeError, KeyError, AttributeError, AssertionError)


def _naming(op_name: str, err: Exception) -> str:
    """The error's message, prefixed with the op's name unless it already starts with it."""
    message = f"missing option {err}" if isinstance(err, KeyError) else str(err)
    if message.startswith((op_name, op_name.removeprefix("kiln."))):
        return message
    return f"{op_name}: {message}"


def check(condition: bool, message: str) -> None:
    """Shape-inference precondition; raises ValueError that the verifier reports."""
    if not condition:
        raise ValueError(message)


def normalize_dim(dim: int, rank: int) -> int:
    check(-rank <= dim < max(rank, 1), f"dim {dim} out of range for rank {rank}")
    return dim % rank if rank else 0


def same_as(t: TensorType, shape: Sequence[int], element_type: Attribute | None = None) -> TensorType:
    """A tensor type like `t` with a new shape (and optionally element type)."""
    return TensorType(element_type or t.element_type, list(shape))
