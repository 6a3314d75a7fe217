"""CompiledModule: what a compile returns, callable with the model's signature, plus its report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree


class InputMismatchError(ValueError):
    """A call whose tensors differ in shape or dtype from those the module was compiled for."""


class CompiledModule:
    def __init__(self, run: Callable[..., list[Any]], in_spec: Any, out_spec: Any, report: dict[str, Any],
                 signature: list[tuple[tuple[int, ...], torch.dtype]] | None = None):
        self._run = run
        self._in_spec = in_spec
        self._out_spec = out_spec
        self.report = report
        # (shape, dtype) of every flat input tensor: kernels are shaped for exactly these
        self.signature = signature
        self._leaf_output = out_spec is not None and out_spec.is_leaf()
        # A lone TVM kernel records nothing for autograd; a runner with eager steps would
        self.needs_no_grad = not getattr(run, "autograd_free", False)
        # torch.compile path: which of Dynamo's inputs are the user's (the rest, module
        # state, were bound at compile time); None when every input is the caller's
        self.input_positions: list[int] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The thin path (a few hundred ns in Python): flat tensors whose (shape, dtype) list
        # equals the signature in one comparison, no grad-mode switch when already off.
        if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
            args = tuple(pytree.tree_leaves((args, kwargs)) if kwargs else pytree.tree_leaves(args))
            if self.signature is not None:
                self._check(args)
        elif self.signature is not None and [(a.shape, a.dtype) for a in args] != self.signature:
            self._check(args)  # raises, naming the input
        if self.needs_no_grad and torch.is_grad_enabled():
            with torch.no_grad():
                outs = self._run(*args)
        else:
            outs = self._run(*args)
        if self._leaf_output:  # the common case, without pytree's generic walk
            return outs[0]
        if self._out_spec is None:
            return outs
        return pytree.tree_unflatten(list(outs), self._out_spec)

    def _check(self, args: tuple[Any, ...]) -> None:
        """One line naming the input and both signatures, instead of a kernel's internal error."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if len(tensors) != len(self.signature):  # type: ignore[arg-type]
            raise InputMismatchError(
                f"compiled for {len(self.signature)} input tensors, called with {len(tensors)}")  # type: ignore[arg-type]
        for i, (a, (shape, dtype)) in enumerate(zip(tensors, self.signature)):  # type: ignore[arg-type]
            if a.shape != shape or a.dtype != dtype:
                raise InputMismatchError(
                    f"input {i} was compiled as {tuple(shape)} {str(dtype).removeprefix('torch.')}, called with "
                    f"{tuple(a.shape)} {str(a.dtype).removeprefix('torch.')}: compile_model specializes to the "
                    "example inputs; compile again for this shape, or use torch.compile(model, backend=\"kiln\"), "
                    "which compiles once per shape")

    def flat(self, *flat_args: torch.Tensor) -> list[Any]:
        """Flat tensors in, flat outputs out: the thinnest call (what torch.compile uses)."""
        return self._run(*flat_args)
