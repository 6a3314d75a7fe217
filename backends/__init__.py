"""Backends behind one protocol (`backends.base`); `get_backend(target)` picks one."""

from __future__ import annotations

from backends.base import Backend, BackendError, BuildOptions, Capabilities, Kernel
from backends.registry import TARGETS, UnknownTargetError, get_backend

__all__ = [
    "TARGETS",
    "Backend",
    "BackendError",
    "BuildOptions",
    "Capabilities",
    "Kernel",
    "UnknownTargetError",
    "get_backend",
]
