"""Record MoE routing from a running torch model: per call, per MoE layer, each token's top-k.

Recognition is by structure, the same rule the `place-experts` pass applies to the IR: a
router is a top-k (or, for Switch-style top-1, an argmax / max) over the last dim of a
softmax output. A `TorchFunctionMode` watches every torch function call during the
forward, remembers which tensors came out of a softmax, and records each router in call
order, which is the MoE layer order. No model class or module name is consulted, so
Mixtral-, Qwen2-MoE- and Switch-style HF models and Kiln's zoo `moe` are all traced by the
same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from passes.experts.trace import ExpertsError, ExpertTrace

_SOFTMAX = {torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, torch.special.softmax}
_TOPK = {torch.topk, torch.Tensor.topk}
_TOP1 = {torch.argmax, torch.Tensor.argmax}


def _dim(args: tuple, kwargs: dict, pos: int) -> Any:
    return kwargs.get("dim", args[pos] if len(args) > pos else None)


class RouterRecorder(TorchFunctionMode):
    """Collects (indices [T, K], weights [T, K]) for each router call, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.probs: dict[int, torch.Tensor] = {}  # id -> tensor, kept alive while recording
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _SOFTMAX and isinstance(out, torch.Tensor) and _last(out, _dim(args, kwargs, 1)):
            self.probs[id(out)] = out
        elif func in _TOPK and id(args[0]) in self.probs and _last(args[0], _dim(args, kwargs, 2)):
            values, indices = out
            self._record(indices, values)
        elif func in _TOP1 and id(args[0]) in self.probs and _last(args[0], _dim(args, kwargs, 1)):
            probs = self.probs[id(args[0])]
            self._record(out.unsqueeze(-1), probs.gather(-1, out.unsqueeze(-1)))
        return out

    def _record(self, indices: torch.Tensor, weights: torch.Tensor) -> None:
        e = indices.shape[-1]
        self.calls.append((indices.detach().reshape(-1, e).long(), weights.detach().reshape(-1, e).float()))


def _last(t: Any, dim: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 1 and dim is not None and int(dim) in (-1, t.dim() - 1)


def record_call(model: torch.nn.Module, inputs: Sequence[Any]) -> tuple[list, int, Any]:
    """One forward under the recorder: (router calls, experts, model output)."""
    rec = RouterRecorder()
    with torch.no_grad(), rec:
        out = model(*inputs)
    return rec.calls, _experts_of(rec), out


def _experts_of(rec: RouterRecorder) -> int:
    sizes = {p.shape[-1] for p in rec.probs.values() if p.numel() // p.shape[-1] in {i.shape[0] for i, _ in rec.calls}}
    return max(sizes) if sizes else 0


def sample_inputs(inputs: Sequence[Any], samples: int, seed: int = 0) -> list[tuple[Any, ...]]:
    """`samples` calibration inputs shaped like `inputs`: token ids redrawn in their range, floats ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        new = []
        for x in inputs:
            if isinstance(x, torch.Tensor) and not x.is_floating_point() and x.dtype != torch.bool:
                new.append(torch.randint(0, int(x.max()) + 1, x.shape, generator=gen, dtype=x.dtype))
            elif isinstance(x, torch.Tensor) and x.is_floating_point():
                new.append(torch.randn(x.shape, generator=gen, dtype=x.dtype))
            else:
                new.append(x)
        out.append(tuple(new))
    return out


def trace_model(model: torch.nn.Module, calls: Sequence[Sequence[Any]], name: str = "",
                on_call: Callable[[int], None] | None = None) -> ExpertTrace:
    """Run every input tuple in `calls` and return the routing trace (one-line errors);
    `on_call(i)` after each (a progress bar)."""
    if not calls:
        raise ExpertsError("trace-experts: no calibration inputs (need --samples >= 1 or a non-empty --data)")
    model = model.eval()
    routing, weights, shape = [], [], None
    for i, inputs in enumerate(calls):
        recorded, experts, _ = record_call(model, inputs)
        if not recorded:
            raise ExpertsError(f"trace-experts: {name or 'model'} has no MoE router "
                               f"(no top-k or argmax over a softmax's last dim) on input {i}")
        ks = {idx.shape[1] for idx, _ in recorded}
        tokens = {idx.shape[0] for idx, _ in recorded}
        if len(ks) != 1 or len(tokens) != 1:
            raise ExpertsError(f"trace-experts: routers differ in top-k {sorted(ks)} or tokens {sorted(tokens)}")
        this = (len(recorded), experts, ks.pop())
        if shape is not None and this != shape:
            raise ExpertsError(f"trace-experts: input {i} routed through {this[0]} layers, earlier inputs {shape[0]}")
        shape = this
        routing.append(np.stack([idx.numpy() for idx, _ in recorded]))
        weights.append(np.stack([w.numpy().astype(np.float64) for _, w in recorded]))
        if on_call is not None:
            on_call(i)
    layers, experts, k = shape  # type: ignore[misc]
    return ExpertTrace(layers, experts, k, routing, "recorded", name, None, {"calls": len(calls)}, weights)
