"""Bound weights must be the caller's weights: one compile per set of module-state tensors.

Kiln binds the parameters and buffers that Dynamo lifts to graph inputs at compile time
(packed once, never passed again), which is where much of its thin call path comes from.
Dynamo's guards, however, check only shapes and dtypes of those inputs: with inlined
nn.Modules one compiled graph serves every instance of a module class, so the graph
compiled for expert 0 of a mixture-of-experts layer is called again with expert 1's
weights (HF Switch Transformer: max error 2.9). So each call checks, by identity, that
the state tensors are the ones bound (a C-level loop of `is` comparisons, about 1 us for
150 tensors), and a new set of tensors gets its own compile, kept with the others up to
`max_sets`. Writes into a bound parameter stay visible: it is bound by reference.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

MAX_SETS = 16


class StateGuarded:
    """Dispatch to the compile whose bound state tensors are the ones passed now."""

    def __init__(self, positions: Sequence[int], example_inputs: Sequence[Any], first: Callable,
                 compile_fn: Callable[[Sequence[Any]], Callable], max_sets: int = MAX_SETS) -> None:
        self.positions = list(positions)
        self.compile_fn = compile_fn
        self.max_sets = max_sets
        self.bound = [example_inputs[i] for i in self.positions]
        # the state arguments of a call, picked in C (a list comprehension over 150 params
        # cost more than the identity check itself)
        pick = operator.itemgetter(*self.positions)
        self.pick = pick if len(self.positions) > 1 else (lambda args: (pick(args),))
        self.first = first
        self.others: OrderedDict[tuple[int, ...], tuple[list[Any], Callable]] = OrderedDict()

    def __call__(self, *args: Any) -> Any:
        if all(map(operator.is_, self.pick(args), self.bound)):
            return self.first(*args)
        return self._other(args)(*args)

    def _other(self, args: Sequence[Any]) -> Callable:
        state = list(self.pick(args))
        key = tuple(id(t) for t in state)
        hit = self.others.get(key)
        if hit is not None and all(map(operator.is_, state, hit[0])):
            self.others.move_to_end(key)
            return hit[1]
        run = self.compile_fn(args)
        self.others[key] = (state, run)  # the tensors are kept, so their ids stay theirs
        if len(self.others) > self.max_sets:
            self.others.popitem(last=False)
        return run


def state_positions(example_inputs: Sequence[Any], user_positions: Sequence[int] | None) -> list[int]:
    """Positions of the Dynamo inputs that were bound as module state (not the user's)."""
    if user_positions is None:
        return []
    kept = set(user_positions)
    return [i for i, x in enumerate(example_inputs) if i not in kept and isinstance(x, torch.Tensor)]
