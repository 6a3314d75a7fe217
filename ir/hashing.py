"""Functional keys for kernels: one key per computation, whatever way it was written.

The autotuning cache stores the best configuration of a kernel under `kernel_key(...)`.
Two kernels share a key exactly when they compute the same thing the same way:

- invisible to the key: SSA names, the program order of independent ops, the operand
  order of commutative ops (`COMMUTATIVE`), parameter names and values, and decisions
  that do not change what is computed (`SCHEDULE_ONLY`: fusion group, memory tier and
  offset, device placement);
- part of the key: op kinds, every other option and attribute (softmax `dim`, `eps`,
  a quantization format, a sharding), operand order of every other op, result shapes
  and dtypes, argument positions and types, which uses share one parameter, constant
  values, the target string and the versions the caller passes (Kiln's codegen version
  and the toolchain's).

How (exact, not probabilistic). The key is SHA-256 of a *complete serialization* of the
function: nodes are numbered in a canonical depth-first post-order from the returned
values, and each is written as (kind, options, result types, operand numbers). The
serialization determines the function up to renaming, so equal keys mean isomorphic
kernels (short of a SHA-256 collision); no hash of a subgraph ever stands in for it.
The traversal order is what makes it canonical: operands of ordinary ops are visited in
slot order, operands of commutative ops in the order of a color that does not depend on
how the function was written: Weisfeiler-Lehman refinement started from the Merkle hash
of each expression (bottom-up, commutative operands sorted) and a hash of its uses
(top-down). The only freedom left is between two operands of one commutative op that WL
cannot tell apart; when the graph is symmetric under swapping them (the usual case,
`linear(x, w1) + linear(x, w2)`) both orders serialize alike, and in the contrived
remaining cases a rewritten kernel may get a second key: a re-tune, never a wrong hit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.ir import Attribute, BlockArgument, Operation, OpResult, SSAValue
from xdsl.traits import Commutative

from ir.attrs import from_attr
from ir.graph import op_nodes, to_networkx
from ir.program import Program, entry_function

# Bump when the serialization changes, so old cache records stop matching.
KEY_FORMAT = "kiln-kernel-key/1"
# What `kernel_key` returns: SHA-256 as 64 lowercase hex digits.
KEY_RE = re.compile(r"[0-9a-f]{64}")

# Ops whose two operands can be swapped without changing the result (broadcasting and
# dtype promotion are symmetric too). Other dialects' ops say so with xDSL's trait.
COMMUTATIVE = frozenset(
    f"kiln.{n}"
    for n in ("add", "mul", "maximum", "minimum", "eq", "ne", "logical_and", "logical_or")
)
# Decisions that say how or where a kernel runs, not what it computes. The other
# decisions (`quant`, `sharding`) change the numbers or the local shapes and stay in.
SCHEDULE_ONLY = frozenset({"group", "memory", "placement", "kiln.fusion"})


def kernel_key(
    program_or_module: Program | ModuleOp | func.FuncOp, target: str, versions: Mapping[str, str]
) -> str:
    """The cache key of a kernel for `target` under the given toolchain `versions` (hex)."""
    payload = {
        "format": KEY_FORMAT,
        "kernel": canonical_form(program_or_module),
        "target": target,
        "versions": sorted((str(k), str(v)) for k, v in versions.items()),
    }
    return hashlib.sha256(_dumps(payload).encode()).hexdigest()


def is_kernel_key(text: str) -> bool:
    return KEY_RE.fullmatch(text) is not None


def canonical_form(program_or_module: Program | ModuleOp | func.FuncOp) -> dict[str, Any]:
    """The complete canonical serialization that `kernel_key` hashes (JSON-ready)."""
    fn = _function(program_or_module)
    graph = _ValueGraph(fn)
    return _Serializer(graph, _colors(graph)).serialize()


# ---- the graph being keyed: ops, arguments and parameters as nodes ---------------------

Node = Hashable  # an Operation, ("arg", i) or ("param", name)


class _ValueGraph:
    """The function as nodes with ordered operands and their uses.

    All `kiln.param` ops naming one parameter are one node: they read one buffer, so
    whether capture wrote the read once or twice does not change the kernel, while
    whether two reads are of one weight or of two does.
    """

    def __init__(self, fn: func.FuncOp) -> None:
        block = fn.body.block
        ret = block.last_op
        if not isinstance(ret, func.ReturnOp):
            raise ValueError(f"function @{fn.sym_name.data} does not end in func.return")
        self.arg_types = [_type(a.type) for a in block.args]
        self.order: list[Node] = [("arg", i) for i in range(len(block.args))]
        self.local: dict[Node, list[Any]] = {
            ("arg", i): ["arg", i, t] for i, t in enumerate(self.arg_types)
        }
        self.commutative: set[Node] = set()
        self.operands: dict[Node, list[tuple[Node, int]]] = {n: [] for n in self.order}
        for op in _ops_in_topological_order(fn):
            node = self.node_of(op)
            if node in self.operands:
                continue  # a second read of a parameter already seen
            self.order.append(node)
            self.local[node] = _local(op)
            self.operands[node] = [self.ref(v) for v in op.operands]
            if _commutative(op):
                self.commutative.add(node)
        self.returns = [self.ref(v) for v in ret.operands]
        self.uses: dict[Node, list[tuple[Node, Any, int]]] = {n: [] for n in self.order}
        for node in self.order:
            for slot, (producer, result) in enumerate(self.operands[node]):
                self.uses[producer].append(
                    (node, "*" if node in self.commutative else slot, result)
                )
        for slot, (producer, result) in enumerate(self.returns):
            self.uses[producer].append((RETURN, slot, result))

    @staticmethod
    def node_of(op: Operation) -> Node:
        if op.name == "kiln.param":
            return ("param", str(from_attr(op.properties["name"])))
        return op

    def ref(self, value: SSAValue) -> tuple[Node, int]:
        if isinstance(value, BlockArgument):
            return ("arg", value.index), 0
        assert isinstance(value, OpResult)
        return self.node_of(value.op), value.index


RETURN = ("return",)


# ---- colors: labels that do not depend on names or program order ----------------------


def _colors(graph: _ValueGraph) -> dict[Node, str]:
    """Weisfeiler-Lehman color refinement, started from expression and context hashes.

    The Merkle hash of each expression (bottom-up) and a hash of its uses (top-down) make
    most nodes distinct in one sweep each, so the refinement that follows usually stops
    after a round or two; it runs until the partition stops splitting.
    """
    color: dict[Node, str] = {}
    for node in graph.order:  # bottom-up
        operands = [[color[p], r] for p, r in graph.operands[node]]
        if node in graph.commutative:
            operands.sort()
        color[node] = _digest([graph.local[node], operands])
    color[RETURN] = "return"
    for node in reversed(graph.order):  # top-down
        color[node] = _digest([color[node], _use_colors(graph, node, color)])
    classes = len(set(color.values()))
    while True:
        refined = {RETURN: "return"}
        for node in graph.order:
            operands = [[color[p], r] for p, r in graph.operands[node]]
            if node in graph.commutative:
                operands.sort()
            refined[node] = _digest([color[node], operands, _use_colors(graph, node, color)])
        count = len(set(refined.values()))
        color = refined
        if count == classes:
            return color
        classes = count


def _use_colors(graph: _ValueGraph, node: Node, color: Mapping[Node, str]) -> list[Any]:
    return sorted([color[user], slot, r] for user, slot, r in graph.uses[node])


# ---- the serialization ----------------------------------------------------------------


class _Serializer:
    def __init__(self, graph: _ValueGraph, color: Mapping[Node, str]) -> None:
        self.graph = graph
        self.color = color
        self.number: dict[Node, int] = {}
        self.entries: list[list[Any]] = []

    def serialize(self) -> dict[str, Any]:
        for producer, _ in self.graph.returns:
            self._visit(producer)
        returns = [self._ref(p, r) for p, r in self.graph.returns]
        # Dead ops (no path to the return) still run in a naive kernel: keep them, from
        # their sinks in color order.
        sinks = [n for n in self.graph.order if n not in self.number and not self.graph.uses[n]]
        for node in sorted(sinks, key=lambda n: self.color[n]):
            self._visit(node)
        return {"args": self.graph.arg_types, "ops": self.entries, "returns": returns}

    def _visit(self, root: Node) -> None:
        """Number `root` and everything it depends on, operands first (iterative DFS)."""
        if root in self.number or _is_arg(root):
            return
        stack: list[tuple[Node, Iterator[tuple[Node, int]]]] = [(root, self._visit_order(root))]
        while stack:
            node, pending = stack[-1]
            child = next((p for p, _ in pending if p not in self.number and not _is_arg(p)), None)
            if child is None:
                stack.pop()
                self.number[node] = len(self.entries)
                refs = [self._ref(p, r) for p, r in self.graph.operands[node]]
                if node in self.graph.commutative:
                    refs.sort()
                self.entries.append([self.graph.local[node], refs])
            else:
                stack.append((child, self._visit_order(child)))

    def _visit_order(self, node: Node) -> Iterator[tuple[Node, int]]:
        operands = list(self.graph.operands[node])
        if node in self.graph.commutative:
            operands.sort(key=lambda pr: (self.color[pr[0]], pr[1]))
        return iter(operands)

    def _ref(self, producer: Node, result: int) -> list[Any]:
        if _is_arg(producer):
            return ["arg", producer[1], 0]  # type: ignore[index]
        return ["op", self.number[producer], result]


def _is_arg(node: Node) -> bool:
    return isinstance(node, tuple) and node[0] == "arg"


# ---- one op's own description -------------------------------------------------------


def _local(op: Operation) -> list[Any]:
    """Kind, semantic options and result types (a parameter's name is not an option)."""
    options: dict[str, Any] = {}
    for source in (op.attributes, op.properties):
        for key, attr in source.items():
            if key in SCHEDULE_ONLY or (op.name == "kiln.param" and key == "name"):
                continue
            options[key] = _attr_value(attr)
    if op.regions:
        raise ValueError(f"{op.name}: ops with regions have no kernel key")
    return [op.name, sorted(options.items()), [_type(r.type) for r in op.results]]


def _attr_value(attr: Attribute) -> list[Any]:
    if isinstance(attr, DenseIntOrFPElementsAttr):
        return ["dense", _type(attr.get_type()), [_number(v) for v in attr.get_values()]]
    try:
        value = from_attr(attr)
    except TypeError:
        return ["attr", str(attr)]
    return ["value", list(value) if isinstance(value, tuple) else value]


def _number(v: Any) -> Any:
    return float(v) if isinstance(v, float) else int(v)


def _type(t: Attribute) -> str:
    return str(t)


def _commutative(op: Operation) -> bool:
    return op.name in COMMUTATIVE or op.has_trait(Commutative)


# ---- plumbing -----------------------------------------------------------------------


def _function(obj: Program | ModuleOp | func.FuncOp) -> func.FuncOp:
    if isinstance(obj, Program):
        return obj.forward
    if isinstance(obj, ModuleOp):
        return entry_function(obj)
    if isinstance(obj, func.FuncOp):
        return obj
    raise TypeError(
        f"kernel_key needs a Program, a module or a func.func, got {type(obj).__name__}"
    )


def _ops_in_topological_order(fn: func.FuncOp) -> list[Operation]:
    """The body's ops except the return, in a topological order of the networkx view."""
    graph = to_networkx(fn)
    return [
        graph.nodes[n]["op"] for n in op_nodes(graph) if graph.nodes[n]["name"] != "func.return"
    ]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _digest(obj: Any) -> str:
    return hashlib.sha256(_dumps(obj).encode()).hexdigest()
