"""The report's view of the compiled model: one node per op, with every decision on it.

The report is built from what the compile left behind (the optimized IR of each partition
and the report dict), never from a second compile, so what it shows is what ran. Each
node carries its op, shape, dtype, fused group, number format, kernel path (packed TIR
kernel, library call, dequantize-in-matmul, HLS layer, eager fallback) and whether fusion
recomputed it; eager fallback nodes between partitions come from the report's `steps`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, TensorType
from xdsl.ir import Operation

FREE_OPS = ("kiln.param", "kiln.constant")
# per-op decision attributes shown on a node (the pass that writes each): map-memory, shard
OP_DECISIONS = {"memory": "memory", "kiln.placement": "placement", "kiln.operand_placements": "operand placements",
                "kiln.all_reduce": "all-reduce axes", "kiln.stage": "pipeline stage",
                "kiln.expert_devices": "expert devices"}
TARGET_KERNEL = {"tvm": "TVM kernel", "triton": "Triton kernel", "hls": "HLS layer", "eager": "eager"}


@dataclass
class Node:
    id: str
    op: str
    shape: str
    dtype: str
    partition: int | None  # None: an eager fallback node between partitions
    group: int | None = None
    quant: str | None = None
    path: str = ""
    recomputed: bool = False
    reuse: int | None = None
    quant_info: dict[str, Any] = field(default_factory=dict)  # the quantize pass's per-layer record
    # other decisions on the op: memory offset and tier, sharding placement, ...
    decisions: dict[str, Any] = field(default_factory=dict)
    island: int | None = None  # eager nodes: which run of consecutive fallback steps
    name: str = ""  # SSA name or FX node name, for search

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class ModelGraph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    # partition index -> its xDSL module (for the roofline and the HLS layer models)
    modules: dict[int, Any] = field(default_factory=dict)
    # (partition, group) -> the ops of that group, for per-kernel costs
    group_ops: dict[tuple[int, int], list[Operation]] = field(default_factory=dict)

    def groups(self) -> list[tuple[int, int]]:
        return sorted(self.group_ops)

    def fallback_islands(self) -> list[list[Node]]:
        """Runs of consecutive eager nodes (between the same two partitions)."""
        islands: dict[int, list[Node]] = {}
        for n in self.nodes:
            if n.island is not None:
                islands.setdefault(n.island, []).append(n)
        return [islands[k] for k in sorted(islands)]


def build_graph(report: dict[str, Any], ir_texts: list[str]) -> ModelGraph:
    """The graph of every partition's optimized IR, with the eager steps between them."""
    from ir import entry_function, kiln_ops, parse_module

    graph = ModelGraph()
    target = report.get("target", "")
    dense = report.get("dense_paths", {}) or {}
    quant_paths = report.get("quant_paths", {}) or {}
    last_of: dict[int, str] = {}
    first_of: dict[int, str] = {}
    for index, text in enumerate(ir_texts):
        module = parse_module(text, f"optimized.{index}.mlir", verify=False)
        graph.modules[index] = module
        fn = entry_function(module)
        ids: dict[Operation, str] = {}
        ops = [op for op in kiln_ops(fn) if op.name not in FREE_OPS]
        recomputed = _recomputed(ops)
        for k, op in enumerate(ops):
            node = _node(op, f"p{index}.{k}", index, target, dense, quant_paths)
            node.recomputed = op in recomputed
            ids[op] = node.id
            graph.nodes.append(node)
            if node.group is not None:
                graph.group_ops.setdefault((index, node.group), []).append(op)
            for operand in op.operands:
                owner = operand.owner
                if isinstance(owner, Operation) and owner in ids:
                    graph.edges.append((ids[owner], node.id))
        if ops:
            first_of[index], last_of[index] = ids[ops[0]], ids[ops[-1]]
    _add_eager_steps(graph, report.get("steps") or [], first_of, last_of)
    return graph


def _node(op: Operation, nid: str, partition: int, target: str, dense: dict, quant_paths: dict) -> Node:
    shape, dtype = _type_of(op)
    node = Node(nid, op.name.removeprefix("kiln."), shape, dtype, partition, name=_ssa_name(op))
    group = op.attributes.get("group")
    if isinstance(group, IntegerAttr):
        node.group = group.value.data
    reuse = op.attributes.get("reuse_factor")
    if isinstance(reuse, IntegerAttr):
        node.reuse = reuse.value.data
    node.quant = _format_of(op)
    quant = op.attributes.get("quant")
    if isinstance(quant, DictionaryAttr):
        node.quant_info = {k: plain(v) for k, v in quant.data.items()}
    for key, attr in op.attributes.items():
        if key in OP_DECISIONS:
            node.decisions[OP_DECISIONS[key]] = (
                {k: plain(v) for k, v in attr.data.items()} if isinstance(attr, DictionaryAttr) else plain(attr))
    weight = _weight_name(op)
    if weight in dense:
        node.path = dense[weight]
    elif weight in quant_paths:
        node.path = quant_paths[weight]
    else:
        kind = TARGET_KERNEL.get(target, target)
        node.path = kind if node.group is None else f"{kind} (group {node.group})"
    if weight:
        node.name = f"{node.name} {weight}".strip()
    return node


def plain(attr: Any) -> Any:
    """An attribute as a Python value; its text when it has no plain value."""
    from ir.attrs import from_attr

    try:
        return from_attr(attr)
    except TypeError:
        return str(attr)


def _type_of(op: Operation) -> tuple[str, str]:
    if not op.results:
        return "", ""
    t = op.results[0].type
    if isinstance(t, TensorType):
        return "x".join(str(d) for d in t.get_shape()) or "scalar", str(t.element_type)
    return "", str(t)


def _ssa_name(op: Operation) -> str:
    return op.results[0].name_hint or "" if op.results else ""


def _format_of(op: Operation) -> str | None:
    quant = op.attributes.get("quant")
    if isinstance(quant, DictionaryAttr) and isinstance(quant.data.get("format"), StringAttr):
        fmt = quant.data["format"].data
        act = quant.data.get("act_format")
        return fmt + (f", act {act.data}" if isinstance(act, StringAttr) else "")
    fmt = op.properties.get("format")
    return fmt.data if isinstance(fmt, StringAttr) else None


def _weight_name(op: Operation) -> str | None:
    """The parameter a contraction reads as its weight (through a dequantize)."""
    for operand in op.operands[1:2]:
        owner = operand.owner
        while isinstance(owner, Operation) and owner.name == "kiln.dequantize":
            owner = owner.operands[0].owner
        if isinstance(owner, Operation) and owner.name == "kiln.param":
            name = owner.properties.get("name")
            return name.data if isinstance(name, StringAttr) else None
    return None


def _recomputed(ops: list[Operation]) -> set[Operation]:
    """Ops that fusion cloned into several groups: the same computation (op, properties,
    types, and operands that are the same value or copies of it) in more than one group.
    CSE runs before fusion, so a repeated computation is a recompute clone."""
    sig: dict[Operation, int] = {}
    by_sig: dict[int, list[Operation]] = defaultdict(list)
    for op in ops:
        operands = []
        for v in op.operands:
            owner = v.owner
            operands.append(sig.get(owner, id(v)) if isinstance(owner, Operation) else id(v))
        props = {k: str(v) for k, v in op.properties.items()}
        attrs = {k: str(v) for k, v in op.attributes.items() if k != "group"}
        key = hash((op.name, str(props), str(attrs), tuple(str(r.type) for r in op.results), tuple(operands)))
        sig[op] = key
        by_sig[key].append(op)
    out: set[Operation] = set()
    for copies in by_sig.values():
        groups = {c.attributes.get("group") for c in copies}
        if len(copies) > 1 and len(groups) > 1:
            out.update(copies)
    return out


def _add_eager_steps(graph: ModelGraph, steps: list[dict], first_of: dict[int, str], last_of: dict[int, str]) -> None:
    """Eager nodes in execution order, joined to the partitions before and after them."""
    prev: str | None = None
    island, in_island = -1, False
    for k, step in enumerate(steps):
        if step.get("kind") == "partition":
            in_island = False
            index = step["index"]
            if prev is not None and index in first_of:
                graph.edges.append((prev, first_of[index]))
            prev = last_of.get(index, prev)
            continue
        node = Node(f"eager.{k}", str(step.get("op", "?")), str(step.get("shape", "")),
                    str(step.get("dtype", "")), None, path="eager fallback", name=str(step.get("node", "")))
        if not in_island:
            island, in_island = island + 1, True
        node.island = island
        graph.nodes.append(node)
        if prev is not None:
            graph.edges.append((prev, node.id))
        prev = node.id
