"""Runs a partitioned graph: compiled partitions and eager leftovers, in order.

Steps are ordered by partition level (see `capture.partition`): at each level the
compiled partition runs first, then the eager nodes of that level. When the whole
graph is one partition fed directly by the user inputs, the runner is bypassed and the
kernel is called as is (the thin call path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree


@dataclass
class Step:
    fn: Callable[..., Any]
    inputs: list[Any]  # fx nodes (looked up in env) or constants, as args
    outputs: list[torch.fx.Node]
    kwargs: dict[str, Any] | None = None
    eager: bool = False


class GraphRunner:
    def __init__(
        self,
        input_nodes: Sequence[torch.fx.Node],
        consts: dict[torch.fx.Node, torch.Tensor],
        steps: list[Step],
        output_args: Any,  # the graph output node's args[0]: a pytree of nodes
    ) -> None:
        self.input_nodes = list(input_nodes)
        self.consts = consts
        self.steps = steps
        self.output_args = output_args

    def __call__(self, *args: torch.Tensor) -> list[Any]:
        env: dict[torch.fx.Node, Any] = dict(self.consts)
        env.update(zip(self.input_nodes, args))
        lookup = lambda n: env[n]  # noqa: E731
        for step in self.steps:
            if step.eager:
                values = torch.fx.node.map_arg(step.inputs, lookup)
                kwargs = torch.fx.node.map_arg(step.kwargs or {}, lookup)
                env[step.outputs[0]] = step.fn(*values, **kwargs)  # type: ignore[index]
                continue
            results = step.fn(*[env[n] for n in step.inputs])
            env.update(zip(step.outputs, results))
        flat, _ = pytree.tree_flatten(self.output_args)
        return [env[n] if isinstance(n, torch.fx.Node) else n for n in flat]
