"""The state of converting one FX subgraph into a kiln function.

Converters in `table.py` receive a `Lowering` and ask it for the SSA value of an FX
argument (`value`), for scalars as constants (`scalar`), and append ops (`emit`). It
also checks each converted node's type against the fake tensor FX recorded, so a
converter that disagrees with PyTorch about a shape or dtype is caught at capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Block, Operation, SSAValue

from compiler.capture.errors import Unsupported
from ir import dtypes
from ir.ops.sources import ConstantOp


class Lowering:
    def __init__(self, block: Block, env: dict[torch.fx.Node, Any]) -> None:
        self.block = block
        self.env = env  # fx node -> SSAValue or tuple of SSAValues
        self.node: torch.fx.Node | None = None

    # ---- values -----------------------------------------------------------------------
    def value(self, arg: Any, like: SSAValue | None = None) -> SSAValue:
        """SSA value for an FX argument: a node's result, or a scalar made a constant."""
        if isinstance(arg, torch.fx.Node):
            v = self.env[arg]
            if isinstance(v, tuple):
                raise self.unsupported(f"argument {arg.name} is a tuple, not a tensor")
            return v
        if isinstance(arg, (bool, int, float)):
            return self.scalar(arg, like)
        raise self.unsupported(f"argument {arg!r} is not a tensor or scalar")

    def scalar(self, value: bool | int | float, like: SSAValue | None = None) -> SSAValue:
        """A rank-0 constant; its dtype follows torch's scalar promotion against `like`."""
        dtype = _scalar_dtype(value, dtypes.dtype_of(like.type) if like is not None else None)
        return self.emit(ConstantOp.of(torch.tensor(value, dtype=dtype)))

    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if len(op.results) == 1 else op.results  # type: ignore[return-value]

    # ---- facts about the current node -------------------------------------------------
    def meta(self, node: torch.fx.Node | None = None) -> Any:
        node = node or self.node
        val = node.meta.get("val") if node is not None else None
        if val is None:
            raise self.unsupported("node has no recorded shape (meta['val'])")
        return val

    def out_shape(self) -> tuple[int, ...]:
        return _static_shape(self.meta(), self)

    def shape(self, arg: torch.fx.Node) -> tuple[int, ...]:
        return dtypes.shape_of(self.value(arg).type)

    def unsupported(self, reason: str) -> Unsupported:
        node = self.node
        return Unsupported(_op_name(node), node.name if node is not None else "?", reason)

    def check_types(self, node: torch.fx.Node, result: SSAValue | Sequence[SSAValue]) -> None:
        """The kiln result type(s) must equal what FX recorded for the node."""
        val = node.meta.get("val")
        if val is None:
            return
        results = [result] if isinstance(result, SSAValue) else list(result)
        vals = [val] if isinstance(val, torch.Tensor) else list(val)
        for r, v in zip(results, vals):
            if not isinstance(v, torch.Tensor):
                continue
            expected = TensorType(dtypes.to_element_type(v.dtype), list(_static_shape(v, self)))
            if r.type != expected:
                raise self.unsupported(f"converted type {r.type} differs from torch's {expected}")


def _scalar_dtype(value: bool | int | float, like: torch.dtype | None) -> torch.dtype:
    if isinstance(value, bool):
        return like if like is not None else torch.bool
    if isinstance(value, int):
        return like if like is not None and like != torch.bool else torch.int64
    if like is not None and like.is_floating_point:
        return like
    return torch.float32


def _static_shape(val: Any, lowering: Lowering) -> tuple[int, ...]:
    if not isinstance(val, torch.Tensor):
        raise lowering.unsupported(f"result is {type(val).__name__}, not a tensor")
    try:
        return tuple(int(d) for d in val.shape)
    except TypeError as err:  # symbolic sizes
        raise lowering.unsupported(f"dynamic shape {tuple(val.shape)}") from err


def _op_name(node: torch.fx.Node | None) -> str:
    if node is None:
        return "?"
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    if hasattr(target, "_schema"):
        return f"aten.{target._schema.name.split('::')[-1]}" + (
            f".{target._overloadname}" if getattr(target, "_overloadname", "default") != "default" else ""
        )
    return str(name)


op_name = _op_name
