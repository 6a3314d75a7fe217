"""Where the Triton backend meets the machine: a CUDA GPU, or Triton's CPU interpreter.

This is the one place the backend reads the environment. Without a CUDA device Triton has
no driver ("0 active drivers"), so kernels run under `TRITON_INTERPRET=1`, which must be
set before `@triton.jit` functions are created. Triton is often imported earlier than
that in the same process (`import torch._dynamo` imports it), leaving the library's own
jit helpers (`tl.zeros`, `tl.sum`, `tl.sigmoid`, ...) compiled-mode objects that the
interpreter refuses to call; `_make_language_interpretable` rewraps them, which is what
importing Triton under `TRITON_INTERPRET=1` would have done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    interpret: bool  # kernels run in Triton's CPU interpreter on CPU tensors
    device: str  # where bound tensors live: "cuda" or "cpu"


def configure_runtime() -> Runtime:
    import torch

    forced = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if torch.cuda.is_available() and not forced:
        return Runtime(interpret=False, device="cuda")
    os.environ["TRITON_INTERPRET"] = "1"
    _make_language_interpretable()
    return Runtime(interpret=True, device="cpu")


def _make_language_interpretable() -> None:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    if not isinstance(tl.standard.zeros, JITFunction):
        return  # imported under TRITON_INTERPRET=1 already
    converted: dict[int, InterpretedFunction] = {}
    for module in (tl, tl.core, tl.standard, tl.math):
        for name, obj in list(vars(module).items()):
            if type(obj) is JITFunction:
                setattr(module, name, converted.setdefault(id(obj), InterpretedFunction(obj.fn)))
