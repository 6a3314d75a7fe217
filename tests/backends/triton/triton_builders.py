"""Build small kiln programs by hand for the Triton backend tests, with fusion groups set
by hand (the `group` attribute the `fuse` pass writes), and check them against the
reference interpreter.

(The file is not called `builders.py`: test folders have no `__init__.py`, so a helper
module's name must be unique across `tests/`.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Block, Region, SSAValue

import ir
from backends.base import BuildOptions
from backends.triton.backend import TritonBackend, TritonKernel
from ir.dtypes import tensor_type
from ir.ops.sources import ConstantOp, ParamOp
from ir.program import Program


class Builder:
    """Appends ops to one block; `op(...)` returns the op's (single) result."""

    def __init__(self, inputs: list[torch.Tensor]) -> None:
        self.block = Block(arg_types=[tensor_type(tuple(t.shape), t.dtype) for t in inputs])
        self.args = list(self.block.args)
        self.params: dict[str, torch.Tensor] = {}

    def op(
        self, op_class, *operands: SSAValue | None, group: int | None = None, **options: Any
    ) -> SSAValue:
        op = op_class.make(*operands, **options)
        if group is not None:
            op.attributes["group"] = IntegerAttr(group, i64)
        self.block.add_op(op)
        return op.results[0]

    def param(self, name: str, tensor: torch.Tensor) -> SSAValue:
        self.params[name] = tensor
        op = ParamOp.of(name, tensor_type(tuple(tensor.shape), tensor.dtype))
        self.block.add_op(op)
        return op.result

    def const(self, tensor: torch.Tensor) -> SSAValue:
        op = ConstantOp.of(tensor)
        self.block.add_op(op)
        return op.result


def build(inputs: list[torch.Tensor], body: Callable[[Builder], list[SSAValue]]) -> Program:
    b = Builder(inputs)
    results = body(b)
    b.block.add_op(func.ReturnOp(*results))
    fn = func.FuncOp(
        "forward", ([a.type for a in b.args], [r.type for r in results]), Region(b.block)
    )
    module = ModuleOp([fn])
    module.verify()
    return Program(module, b.params)


def compile_triton(program: Program, overrides: dict | None = None, **options: Any) -> TritonKernel:
    return TritonBackend().build(program, BuildOptions(**options), overrides)


def check(
    program: Program, inputs: list[torch.Tensor], overrides: dict | None = None, tol: float = 1e-4
) -> TritonKernel:
    """Build with Triton, run, and compare every output with the reference interpreter."""
    kernel = compile_triton(program, overrides)
    expected = ir.run(program, *inputs)
    got = kernel(*inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, e.shape, g.dtype, e.dtype)
        torch.testing.assert_close(g, e, atol=tol, rtol=tol, equal_nan=True)
    return kernel


def source(kernel: TritonKernel) -> str:
    return kernel.generated.source  # type: ignore[union-attr]
