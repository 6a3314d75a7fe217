"""The compiler: capture, the compile driver, the torch.compile backend, the CLI, the service.

`from compiler import compile_model` is the Python API. Names are loaded on first use
(PEP 562), so `kiln serve` or `kiln --help` do not pay for importing torch and TVM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compiler.compiled import CompiledModule
    from compiler.driver import compile_model
    from compiler.options import CompileOptions

__all__ = ["CompileOptions", "CompiledModule", "compile_model"]

_WHERE = {
    "CompileOptions": "compiler.options",
    "CompiledModule": "compiler.compiled",
    "compile_model": "compiler.driver",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")
