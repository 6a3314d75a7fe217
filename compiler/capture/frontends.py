"""Front ends: a model (via torch.export) or a Dynamo FX graph, to one flat aten graph.

Both end as an `AtenGraph`: an aten-level FX graph whose placeholders are either bound
at compile time (parameters, buffers, constants: `consts`) or fed by the caller
(`inputs`, in call order). Dynamo graphs are re-traced with torch.export so that both
front ends see the same op set (non-decomposed aten: linear, layer_norm, sdpa).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch.export.graph_signature import InputKind, OutputKind

from compiler.capture.errors import first_line
from compiler.capture.fastpath import decompose_fast_paths
from compiler.capture.functionalize import functionalize


class CaptureError(RuntimeError):
    """The model could not be captured at all (export failed, mutation, dynamic shapes)."""


@dataclass
class AtenGraph:
    graph: torch.fx.Graph
    consts: dict[str, torch.Tensor]  # placeholder name -> bound tensor
    inputs: list[str]  # placeholder names fed by the caller, in order
    out_spec: Any = None  # pytree spec of the model's outputs (export front end)
    in_spec: Any = None
    # Positions of the caller's arguments that feed `inputs` (Dynamo passes module state
    # as arguments too; those positions are bound and skipped). None: all of them.
    input_positions: list[int] | None = None
    notes: list[str] = field(default_factory=list)

    def placeholders(self) -> list[torch.fx.Node]:
        return [n for n in self.graph.nodes if n.op == "placeholder"]


def from_model(model: torch.nn.Module, example_inputs: Sequence[Any]) -> AtenGraph:
    """Capture with torch.export (non-strict), parameters and buffers bound as consts."""
    try:
        ep = torch.export.export(model, tuple(example_inputs), strict=False)
    except Exception as err:  # export's errors are long; keep the first line
        first = first_line(err)
        raise CaptureError(f"torch.export failed on {type(model).__name__}: {first}") from err
    graph = _from_exported(ep)
    _check_no_state_writes(graph)
    return graph


def _from_exported(ep: torch.export.ExportedProgram) -> AtenGraph:
    sig = ep.graph_signature
    for spec in sig.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise CaptureError(
                f"the model mutates {spec.target or spec.arg.name} in forward ({spec.kind.name}); "
                "Kiln compiles inference graphs without state updates"
            )
    consts: dict[str, torch.Tensor] = {}
    inputs: list[str] = []
    for spec in sig.input_specs:
        name = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            inputs.append(name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            consts[name] = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            consts[name] = ep.constants[spec.target]
        else:
            raise CaptureError(f"unsupported exported input {name} of kind {spec.kind.name}")
    graph = AtenGraph(ep.graph_module.graph, consts, inputs, ep.call_spec.out_spec, ep.call_spec.in_spec)
    rewritten = functionalize(graph.graph)
    if rewritten:
        graph.notes.append(f"{rewritten} in-place ops rewritten to their functional forms")
    return graph


def from_dynamo(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> AtenGraph:
    """Re-trace Dynamo's graph to aten; inputs that are module parameters are bound.

    Dynamo lifts parameters and buffers to graph inputs; binding them by reference (not
    by copy) keeps in-place weight updates visible, as Inductor's non-frozen mode does.
    """
    if any(not isinstance(x, torch.Tensor) for x in example_inputs):
        raise CaptureError("graph has symbolic (dynamic) inputs; Kiln compiles static shapes")
    fast_paths = decompose_fast_paths(gm)
    try:
        ep = torch.export.export(gm, tuple(example_inputs), strict=False)
    except Exception as err:
        first = first_line(err)
        raise CaptureError(f"re-tracing the Dynamo graph with torch.export failed: {first}") from err
    graph = _from_exported(ep)
    bound = [_is_module_state(node, x) for node, x in zip(_placeholders(gm), example_inputs)]
    inputs: list[str] = []
    positions: list[int] = []
    for position, (name, x, is_state) in enumerate(zip(graph.inputs, example_inputs, bound)):
        if is_state:
            graph.consts[name] = x
        else:
            inputs.append(name)
            positions.append(position)
    graph.inputs, graph.input_positions = inputs, positions
    _check_no_state_writes(graph)
    if fast_paths:
        graph.notes.append(f"{fast_paths} fused fast-path ops (transformer layer, MHA) decomposed")
    graph.notes.append(f"{sum(bound)} of {len(bound)} Dynamo inputs are module state, bound at compile time")
    return graph


def _check_no_state_writes(graph: AtenGraph) -> None:
    """Reject in-place writes to bound tensors (parameters, buffers), directly or through a view.

    torch.export's default IR keeps in-place ops (`add_`, `copy_`), so a state update
    does not always show in the output specs. Compiled, it would be folded once at compile
    time into the model's real tensor and then never happen again.
    """
    for node in graph.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None or not schema.is_mutable:
            continue
        for arg, value in zip(schema.arguments, node.args):
            written = arg.alias_info is not None and arg.alias_info.is_write
            if written and isinstance(value, torch.fx.Node):
                root = _alias_root(value)
                if root.op == "placeholder" and root.name in graph.consts:
                    raise CaptureError(
                        f"the model mutates {root.target} in forward ({node.name}: {node.target}); "
                        "Kiln compiles inference graphs without state updates"
                    )


def _alias_root(node: torch.fx.Node) -> torch.fx.Node:
    """Follow view ops (first argument aliased, not written) back to the tensor they view."""
    while node.op == "call_function" and node.args and isinstance(node.args[0], torch.fx.Node):
        schema = getattr(node.target, "_schema", None)
        alias = schema.arguments[0].alias_info if schema is not None and schema.arguments else None
        if alias is None or alias.is_write:
            break
        node = node.args[0]
    return node


def _placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _is_module_state(node: torch.fx.Node, value: torch.Tensor) -> bool:
    if isinstance(value, torch.nn.Parameter):
        return True
    source = node.meta.get("grapharg")
    name = getattr(getattr(source, "source", None), "name", None)
    name = name() if callable(name) else (name or "")
    return "_buffers" in name or "_parameters" in name
