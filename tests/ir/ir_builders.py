"""Build and run small kiln modules by hand, for the ir/ tests.

`one_op_module(OpClass, inputs, **options)` makes `func.func @forward` whose arguments are
the given tensors' types, whose body is one `OpClass.make(...)`, and which returns every
result of that op; `run_one_op` runs it with the reference interpreter. `None` in
`inputs` stands for an absent optional operand (a linear's bias, a layer_norm's weight).

(The file is not called `builders.py`: test folders have no `__init__.py`, so a helper
module's name must be unique across `tests/` or another folder's helper shadows it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region

import ir
from ir.core import KilnOp
from ir.dtypes import tensor_type


def function_of(
    arg_types: Sequence[Any], body: Any, name: str = "forward"
) -> tuple[ModuleOp, func.FuncOp]:
    """A verified module with one function; `body(block_args)` returns (ops, results)."""
    block = Block(arg_types=list(arg_types))
    ops, results = body(list(block.args))
    block.add_ops([*ops, func.ReturnOp(*results)])
    fn = func.FuncOp(name, (list(arg_types), [r.type for r in results]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return module, fn


def one_op_module(
    op_class: type[KilnOp], inputs: Sequence[torch.Tensor | None], **options: Any
) -> tuple[ModuleOp, KilnOp]:
    """A module whose @forward applies one `op_class` op to its arguments."""
    present = [t for t in inputs if t is not None]
    arg_types = [tensor_type(tuple(t.shape), t.dtype) for t in present]
    made: list[Operation] = []

    def body(args):
        it = iter(args)
        operands = [next(it) if t is not None else None for t in inputs]
        op = op_class.make(*operands, **options)
        made.append(op)
        return [op], list(op.results)

    module, _ = function_of(arg_types, body)
    return module, made[0]  # type: ignore[return-value]


def run_one_op(
    op_class: type[KilnOp], inputs: Sequence[torch.Tensor | None], **options: Any
) -> tuple[list[torch.Tensor], KilnOp]:
    """Outputs of the one-op module on `inputs` (via `ir.run`), and the op itself."""
    module, op = one_op_module(op_class, inputs, **options)
    outputs = ir.run(module, *[t for t in inputs if t is not None])
    return outputs, op
