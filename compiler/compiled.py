"""CompiledModule: what a compile returns, callable with the model's signature, plus its report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree


class CompiledModule:
    def __init__(self, run: Callable[..., list[Any]], in_spec: Any, out_spec: Any, report: dict[str, Any]):
        self._run = run
        self._in_spec = in_spec
        self._out_spec = out_spec
        self.report = report

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
            args = tuple(pytree.tree_leaves((args, kwargs)) if kwargs else pytree.tree_leaves(args))
        with torch.no_grad():
            outs = self._run(*args)
        if self._out_spec is None:
            return outs
        if self._single_output:  # the common case, without pytree's generic walk
            return outs[0]
        return pytree.tree_unflatten(list(outs), self._out_spec)

    @property
    def _single_output(self) -> bool:
        return self._out_spec is not None and self._out_spec.is_leaf()

    def flat(self, *flat_args: torch.Tensor) -> list[Any]:
        """Flat tensors in, flat outputs out: the thinnest call (what torch.compile uses)."""
        return self._run(*flat_args)
