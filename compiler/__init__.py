"""The compiler: capture, the compile driver, the torch.compile backend and the CLI.

`from compiler import compile_model` is the Python API.
"""

from __future__ import annotations

from compiler.compiled import CompiledModule
from compiler.driver import compile_model
from compiler.options import CompileOptions

__all__ = ["CompileOptions", "CompiledModule", "compile_model"]
