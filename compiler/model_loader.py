"""Load `path/to/file.py:factory` into (model, example_inputs), with one-line errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch


class ModelSpecError(ValueError):
    """The MODEL argument does not name a usable factory; the message says what to fix."""


def load_model(spec: str) -> tuple[torch.nn.Module, tuple[Any, ...], str]:
    """Returns (model, example_inputs, factory name)."""
    if ":" not in spec:
        raise ModelSpecError(f"MODEL must be path/to/file.py:factory, got {spec!r}")
    path_text, factory_name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise ModelSpecError(f"model file {path_text!r} does not exist")
    module_name = f"kiln_user_model_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelSpecError(f"cannot import {path_text!r} as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:
        raise ModelSpecError(f"importing {path_text} failed: {type(err).__name__}: {err}") from err
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        # dir(), not vars(): a module may offer factories through __getattr__/__dir__
        known = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None)))
        raise ModelSpecError(
            f"{path_text} has no factory {factory_name!r}; callables there: {', '.join(known) or 'none'}"
        )
    try:
        result = factory()
    except Exception as err:
        raise ModelSpecError(f"factory {factory_name}() raised {type(err).__name__}: {err}") from err
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise ModelSpecError(
            f"factory {factory_name}() must return (nn.Module, example_inputs), got {type(result).__name__}"
        )
    model, inputs = result
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return model, inputs, factory_name
