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
    """Steps over a flat list of slots: every node gets an index once, at construction, so
    a call builds no dict, walks no pytree and maps no fx args (the call path's overhead
    on tiny graphs was mostly that bookkeeping)."""

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
        slots: dict[torch.fx.Node, int] = {}

        def slot(node: torch.fx.Node) -> int:
            return slots.setdefault(node, len(slots))

        self._inputs = [slot(n) for n in self.input_nodes]
        const_slots = [(slot(n), t) for n, t in consts.items()]
        self._plan: list[tuple[Any, ...]] = []
        for step in steps:
            if step.eager:
                args = torch.fx.node.map_arg(step.inputs, lambda n: _Slot(slot(n)))
                kwargs = torch.fx.node.map_arg(step.kwargs or {}, lambda n: _Slot(slot(n)))
                self._plan.append((True, step.fn, _fetcher(args), _fetcher(kwargs), slot(step.outputs[0])))
            else:
                ins = [slot(n) for n in step.inputs]
                self._plan.append((False, step.fn, ins, None, [slot(n) for n in step.outputs]))
        flat, _ = pytree.tree_flatten(output_args)
        self._outputs = [(True, slot(n)) if isinstance(n, torch.fx.Node) else (False, n) for n in flat]
        self._template: list[Any] = [None] * len(slots)
        for i, t in const_slots:
            self._template[i] = t

    def __call__(self, *args: torch.Tensor) -> list[Any]:
        env = self._template.copy()
        for i, a in zip(self._inputs, args):
            env[i] = a
        for eager, fn, ins, kw, outs in self._plan:
            if eager:
                env[outs] = fn(*ins(env), **kw(env))
            else:
                for i, r in zip(outs, fn(*[env[j] for j in ins])):
                    env[i] = r
        return [env[v] if is_slot else v for is_slot, v in self._outputs]


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _fetcher(template: Any) -> Callable[[list[Any]], Any]:
    """A function of the slot list that rebuilds `template` (an fx args structure with
    `_Slot`s where nodes were); constants are kept as they are."""
    if isinstance(template, _Slot):
        i = template.index
        return lambda env: env[i]
    if isinstance(template, tuple | list):
        parts = [_fetcher(t) for t in template]
        if all(not isinstance(t, _Slot | tuple | list | dict) for t in template):
            return lambda env: template
        kind = type(template)
        return lambda env: kind(p(env) for p in parts)
    if isinstance(template, dict):
        items = [(k, _fetcher(v)) for k, v in template.items()]
        return lambda env: {k: f(env) for k, f in items}
    return lambda env: template
