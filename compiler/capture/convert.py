"""Convert a set of aten FX nodes into a kiln Program.

`convert_nodes` is used twice: once over the whole graph in "trial" mode, where a node
that fails to convert is recorded and its result becomes a function argument (so
converting continues past it), and once per partition to build the real Program.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import torch
import torch.fx
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region, SSAValue

from compiler.capture.errors import Unsupported
from compiler.capture.lowering import Lowering, op_name
from compiler.capture.table import TABLE
from ir import dtypes
from ir.ops.sources import ParamOp
from ir.program import ENTRY, Program


@dataclass
class Conversion:
    program: Program
    inputs: list[torch.fx.Node]  # function arguments, in order
    outputs: list[torch.fx.Node | tuple[torch.fx.Node, int]]  # returned values, in order
    failures: dict[torch.fx.Node, Unsupported] = field(default_factory=dict)


def convert_nodes(
    nodes: list[torch.fx.Node],
    consts: dict[torch.fx.Node, torch.Tensor],
    outputs: list[torch.fx.Node | tuple[torch.fx.Node, int]],
    trial: bool = False,
) -> Conversion:
    """Build `func.func @forward` computing `outputs` from `nodes` (in topological order).

    `consts` maps nodes whose values are known at compile time (params, buffers, folded
    constants) to tensors; they become `kiln.param` ops. Any other node used but not in
    `nodes` becomes a function argument.
    """
    block = Block()
    env: dict[torch.fx.Node, object] = {}
    params: dict[str, torch.Tensor] = {}
    inputs: list[torch.fx.Node] = []
    lw = Lowering(block, env)
    failures: dict[torch.fx.Node, Unsupported] = {}
    members = set(nodes)

    def ensure(node: torch.fx.Node) -> None:
        if node in env:
            return
        if node in consts:
            tensor = consts[node]
            name = _param_name(node)
            params[name] = tensor
            op = ParamOp.of(name, dtypes.tensor_type(tuple(tensor.shape), tensor.dtype))
            block.add_op(op)
            env[node] = op.result
            return
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise Unsupported(op_name(node), node.name, "input is not a single tensor")
        if not all(isinstance(d, int) for d in val.shape):  # a data-dependent size (u0)
            raise Unsupported(op_name(node), node.name, f"input has dynamic shape {tuple(val.shape)}")
        env[node] = block.insert_arg(dtypes.tensor_type(tuple(val.shape), val.dtype), len(block.args))
        inputs.append(node)

    for node in nodes:
        if node in consts:
            ensure(node)
            continue
        lw.node = node
        try:
            for dep in node.all_input_nodes:
                if dep not in members or dep in failures:
                    ensure(dep)
            env[node] = _convert_one(lw, node)
        except Unsupported as err:
            if not trial:
                raise
            failures[node] = err
        except (ValueError, TypeError, IndexError, KeyError, AssertionError) as err:
            wrapped = Unsupported(op_name(node), node.name, f"{type(err).__name__}: {err}")
            if not trial:
                raise wrapped from err
            failures[node] = wrapped

    results: list[SSAValue] = []
    if not trial:
        for out in outputs:
            node, index = out if isinstance(out, tuple) else (out, None)
            ensure(node)
            value = env[node]
            results.append(value[index] if index is not None else value)  # type: ignore[index]
    block.add_op(func.ReturnOp(*results))
    fn = func.FuncOp(ENTRY, ([a.type for a in block.args], [r.type for r in results]), Region(block))
    return Conversion(Program(ModuleOp([fn]), params), inputs, outputs, failures)


def _convert_one(lw: Lowering, node: torch.fx.Node):
    if node.op != "call_function":
        raise lw.unsupported(f"FX {node.op} nodes are not converted")
    if node.target is operator.getitem:
        source, index = node.args
        value = lw.env[source]
        if not isinstance(value, tuple):
            raise lw.unsupported("getitem on a single tensor")
        return value[index]
    converter = TABLE.get(node.target)
    if converter is None:
        raise lw.unsupported("no kiln lowering for this op")
    result = converter(lw, *node.args, **node.kwargs)
    lw.check_types(node, result)
    return result


def _param_name(node: torch.fx.Node) -> str:
    return node.name


def users_outside(
    nodes: Iterable[torch.fx.Node], ignored: Collection[object] = ()
) -> list[torch.fx.Node]:
    """Nodes of the set whose value is used by a node outside it (or is a graph output).

    In the given (topological) order, not a set's: the order is the partition's result
    order, so it is part of the IR text and of the artifact cache key. Users whose target
    is in `ignored` (metadata asserts, never run) do not make a node a result.
    """
    nodes = list(nodes)
    members = set(nodes)
    return [n for n in nodes if any(u not in members and u.target not in ignored for u in n.users)]
