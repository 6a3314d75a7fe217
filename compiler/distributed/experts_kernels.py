"""Local expert MLPs of the expert-parallel runtime, built by Kiln's backend.

Every expert of one MoE site has the same shapes, so the MLP is compiled once per site kind
and row count, with the expert's weights as *inputs* rather than constants: one TVM build
serves every local expert (a build per expert would cost ~E seconds of capture and
compile per rank here). It goes through the normal path, `compiler.compile_model(...,
target="tvm")`, so the kernels are the ones Kiln builds for any model.

Rows received by an expert vary per call; they are padded with zeros to the call's token
count (an expert gets each token at most once), so one build per call size is enough. The
MLP is row-independent, so the padded rows never touch the real ones and are dropped.

Kinds: the zoo `moe` (`silu(x @ w_gate[e]) * (x @ w_up[e]) @ w_down[e]`) and HF experts with
stacked `gate_up_proj` [E, 2I, H] / `down_proj` [E, H, I] and an `act_fn` (Mixtral,
Qwen2-MoE, ...). Any other HF experts module runs its own eager code, and `why_eager`
says so in the report. `backend="eager"` runs the same formulas in PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

BACKENDS = ("tvm", "eager")


class ZooExpert(torch.nn.Module):
    def forward(self, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
        return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


class GateUpExpert(torch.nn.Module):
    def __init__(self, act: torch.nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        return F.linear(self.act(gate) * up, down)


def hf_kind(module: torch.nn.Module) -> str | None:
    """Why an HF experts module cannot take the compiled MLP, or None when it can."""
    for name in ("gate_up_proj", "down_proj"):
        p = getattr(module, name, None)
        if not isinstance(p, torch.nn.Parameter) or p.dim() != 3:
            return f"{type(module).__name__} has no stacked {name}"
    if not isinstance(getattr(module, "act_fn", None), torch.nn.Module):
        return f"{type(module).__name__} has no act_fn module"
    return None


class ExpertKernels:
    """Compiled expert MLPs of one rank, cached by (kind, rows, weight shapes)."""

    def __init__(self, backend: str = "tvm") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"expert backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        self.built: dict[tuple, Any] = {}
        self.builds = 0
        self.calls = 0

    def run(self, mlp: torch.nn.Module, rows: torch.Tensor, weights: tuple[torch.Tensor, ...],
            pad_to: int) -> torch.Tensor:
        n = rows.shape[0]
        self.calls += 1
        if self.backend == "eager":
            return mlp(rows, *weights)
        size = max(n, pad_to)
        key = (type(mlp).__name__, size, rows.dtype, *(tuple(w.shape) for w in weights))
        fn = self.built.get(key)
        if fn is None:
            from compiler import compile_model

            example = (rows.new_zeros((size, rows.shape[1])), *(w.detach().contiguous() for w in weights))
            fn = compile_model(mlp.eval(), example, target="tvm")
            self.built[key] = fn
            self.builds += 1
        padded = torch.cat([rows, rows.new_zeros((size - n, rows.shape[1]))]) if size > n else rows
        out = fn(padded.contiguous(), *(w.detach().contiguous() for w in weights))
        out = out[0] if isinstance(out, tuple | list) else out
        return out[:n]
