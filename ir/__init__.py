"""The kiln IR: an xDSL dialect of graph-level tensor ops, its interpreter and views.

Public surface: `Kiln` (the dialect), `make_context`, `parse_module` / `print_module`,
`Program`, `run` (the reference interpreter), `to_networkx`, and the op classes in
`ir.ops`. This package imports no passes, backends or torch.compile glue.
"""

from __future__ import annotations

from ir.core import KilnOp
from ir.dialect import OPS_BY_NAME, Kiln, make_context
from ir.graph import to_networkx
from ir.interpreter import InterpreterError, run
from ir.program import Program, entry_function, kiln_ops
from ir.text import IRSyntaxError, parse_module, print_module

__all__ = [
    "IRSyntaxError",
    "InterpreterError",
    "Kiln",
    "KilnOp",
    "OPS_BY_NAME",
    "Program",
    "entry_function",
    "kiln_ops",
    "make_context",
    "parse_module",
    "print_module",
    "run",
    "to_networkx",
]
