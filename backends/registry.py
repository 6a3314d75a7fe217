"""Backends by target name. Heavy toolchains load only when their target is asked for."""

from __future__ import annotations

import importlib

from backends.base import Backend

# target name -> "module:class", imported lazily so `import backends` stays cheap.
TARGETS: dict[str, str] = {
    "tvm": "backends.tvm.backend:TVMBackend",
    "eager": "backends.eager.backend:EagerBackend",
    "triton": "backends.triton.backend:TritonBackend",
    "hls": "backends.hls.backend:HLSBackend",
}


class UnknownTargetError(ValueError):
    pass


def get_backend(target: str) -> Backend:
    if target not in TARGETS:
        raise UnknownTargetError(f"unknown target {target!r}; known targets: {', '.join(sorted(TARGETS))}")
    module_name, class_name = TARGETS[target].split(":")
    return getattr(importlib.import_module(module_name), class_name)()
