"""A Program: the IR module plus the values of its named parameters.

The module says what to compute; the params say with which weights. Keeping the two
together (and apart from text) is what lets a 100 MB model print as a page of IR.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from ir.text import print_module

ENTRY = "forward"


@dataclass
class Program:
    module: ModuleOp
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def forward(self) -> func.FuncOp:
        return entry_function(self.module)

    def kiln_ops(self) -> Iterator:
        return kiln_ops(self.forward)

    def text(self) -> str:
        return print_module(self.module)


def entry_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == ENTRY:
            return op
    for op in module.ops:  # a single function of any name is accepted too
        if isinstance(op, func.FuncOp):
            return op
    raise ValueError(f"module has no func.func @{ENTRY}")


def kiln_ops(fn: func.FuncOp) -> Iterator:
    """The kiln ops of a function's body in program order."""
    for op in fn.body.block.ops:
        if op.name.startswith("kiln."):
            yield op
