"""Dynamic shapes through torch.compile: one compile per concrete shape, in a bounded cache.

After a batch-size change Dynamo marks the dimension dynamic and hands the backend a graph
whose example inputs carry symbolic sizes (and SymInt arguments); `dynamic=True` does so
from the first call. Kiln's IR and kernels are shaped statically, so rather than turning
itself off (the old behaviour: eager for every later call, one warning), Kiln returns a
callable that specializes: each distinct signature of concrete input shapes and dtypes is
compiled on first sight (the Dynamo graph re-traced with those shapes, SymInts bound to
their values) and kept, most recently used first, up to `max_shapes` signatures. Past
that, the least recently used is dropped and recompiled when it comes back, and a
signature that fails to compile runs Dynamo's graph in eager (said once, as a warning).

Symbolic shapes compiled once (TVM Relax can express them) would avoid the recompiles;
that needs symbolic sizes through Kiln's IR and every lowering rule, which is future work.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

MAX_SHAPES = 8


def is_dynamic(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> bool:
    """True if Dynamo traced with symbolic sizes: SymInt arguments, placeholders whose
    recorded value has symbolic dims (the example inputs themselves are real tensors
    then), or Python floats passed as tensors."""
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        value = node.meta.get("example_value")
        if isinstance(value, torch.Tensor) and any(not isinstance(d, int) for d in value.shape):
            return True
        if _scalar_as_tensor(node):
            return True
    for x in example_inputs:
        if isinstance(x, torch.SymInt | torch.SymFloat | torch.SymBool):
            return True
        if isinstance(x, torch.Tensor) and any(not isinstance(d, int) for d in x.shape):
            return True
    return False


class ShapeSpecializing:
    """Compile `gm` per concrete input signature; `compile_fn(gm, args)` returns a flat callable."""

    def __init__(self, gm: torch.fx.GraphModule, compile_fn: Callable[[torch.fx.GraphModule, list], Callable],
                 max_shapes: int = MAX_SHAPES) -> None:
        self.gm = gm
        # Dynamo drops placeholder metadata (`grapharg`: module state? a float passed as a
        # tensor?) once the backend returns; the compiles happen later, so keep it now.
        self.metas = [dict(n.meta) for n in gm.graph.nodes if n.op == "placeholder"]
        self.compile_fn = compile_fn
        self.max_shapes = max_shapes
        self.compiled: OrderedDict[tuple, Callable] = OrderedDict()
        self.reports: list[dict[str, Any]] = []  # one per compile, newest last
        self.recompiles = 0

    def __call__(self, *args: Any) -> Any:
        key = signature(args)
        run = self.compiled.get(key)
        if run is None:
            run = self._compile(key, args)
        else:
            self.compiled.move_to_end(key)
        return run(*args)

    def _compile(self, key: tuple, args: Sequence[Any]) -> Callable:
        specialized, tensor_positions = specialize(self.gm, args, self.metas)
        tensors = [args[i] for i in tensor_positions]
        try:
            inner = self.compile_fn(specialized, tensors)
        except Exception as err:  # torch.compile must never break the model
            from compiler.capture.errors import first_line

            warnings.warn(f"kiln: running this graph in eager for input shapes {key}: {first_line(err)}",
                          stacklevel=3)
            inner = specialized.forward
        report = getattr(inner, "kiln_report", None)
        if report is not None:
            self.reports.append(report)

        def run(*call_args: Any) -> Any:
            return inner(*[call_args[i] for i in tensor_positions])

        self.compiled[key] = run
        self.recompiles += 1
        if len(self.compiled) > self.max_shapes:
            self.compiled.popitem(last=False)
        return run


def signature(args: Sequence[Any]) -> tuple:
    """What a compile is specialized to: shapes and dtypes of tensors, values of the rest."""
    return tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)


def specialize(gm: torch.fx.GraphModule, args: Sequence[Any],
               metas: Sequence[dict] | None = None) -> tuple[torch.fx.GraphModule, list[int]]:
    """A copy of `gm` with every non-tensor placeholder replaced by its concrete value.

    Returns the copy and the positions of `args` that remain inputs (the tensors). The
    placeholders keep their Dynamo metadata, so module state is still recognized.
    """
    graph = copy.deepcopy(gm.graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if metas is None:
        metas = [dict(n.meta) for n in gm.graph.nodes if n.op == "placeholder"]
    positions: list[int] = []
    scalars: dict[str, torch.Tensor] = {}
    for i, (node, meta, value) in enumerate(zip(placeholders, metas, args)):
        node.meta = dict(meta)
        if isinstance(value, torch.Tensor) and not _scalar_as_tensor(node):
            positions.append(i)
            continue
        if isinstance(value, torch.Tensor):  # a Python float Dynamo passes as a 0-d tensor
            for user in [u for u in node.users if _is_item(u)]:  # x.item() is the float itself
                user.replace_all_uses_with(value.item())  # type: ignore[arg-type]
                graph.erase_node(user)
            if not node.users:
                graph.erase_node(node)
                continue
            name = f"_kiln_scalar_{i}"
            scalars[name] = value.detach().clone()
            with graph.inserting_before(node):
                replacement = graph.get_attr(name)
            node.replace_all_uses_with(replacement)
        else:
            concrete = _python_value(value)
            for user in list(node.users):
                user.replace_input_with(node, concrete)
        graph.erase_node(node)
    specialized = torch.fx.GraphModule(gm, graph)
    for name, tensor in scalars.items():
        specialized.register_buffer(name, tensor)
    specialized.recompile()
    return specialized, positions


def _is_item(node: torch.fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "item") or node.target in (
        torch.ops.aten.item.default, torch.Tensor.item)


def _scalar_as_tensor(node: torch.fx.Node) -> bool:
    """Dynamo's unspecialized Python floats (dynamic=True) arrive as 0-d tensors."""
    return bool(getattr(node.meta.get("grapharg"), "pass_arg_as_tensor", False))


def _python_value(value: Any) -> Any:
    if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
        raise TypeError("a symbolic value reached a call: expected concrete arguments at run time")
    return value
