"""Turn in-place aten ops into their functional forms, so only truly unsupported ops fall back.

torch.export's default IR keeps in-place ops: HF ResNet's residual `hidden += shortcut`
is `aten.add_.Tensor`, Mixtral's routing divides in place. Kiln's IR is value-semantic,
so without this step every such op split the model into eager islands. torch's own
functionalization (`ExportedProgram.run_decompositions({})`) would also rewrite ops Kiln
lowers directly (batch_norm, dropout), so Kiln rewrites just the in-place nodes:

`y = aten.add_.Tensor(x, s)` becomes `y = aten.add.Tensor(x, s)`, and every later use of
`x` reads `y`. That is exact when nothing else can observe `x`'s old storage: `x` is
not a placeholder (a caller's or the model's tensor: writing it is a side effect Kiln
must not drop) and no view of `x` is used after the write (the view would see the new
value in eager). Nodes that fail these checks are left as they are, and fall back.
"""

from __future__ import annotations

import torch
import torch.fx

aten = torch.ops.aten


def functional_variant(target) -> object | None:
    """`aten.add_.Tensor` -> `aten.add.Tensor` (same overload), or None if there is none."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    schema = target._schema
    if not schema.is_mutable or not schema.arguments or not _writes_first(schema):
        return None
    name = target._schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(aten, name[:-1], None)
    overload = getattr(packet, target._overloadname, None) if packet is not None else None
    if overload is None or overload._schema.is_mutable:
        return None
    return overload


def _writes_first(schema) -> bool:
    alias = schema.arguments[0].alias_info
    return alias is not None and alias.is_write and not any(
        a.alias_info is not None and a.alias_info.is_write for a in schema.arguments[1:]
    )


def functionalize(graph: torch.fx.Graph) -> int:
    """Rewrite the in-place nodes that can be rewritten exactly; returns how many."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    rewritten = 0
    for node in list(graph.nodes):
        functional = functional_variant(node.target) if node.op == "call_function" else None
        if functional is None or not isinstance(node.args[0], torch.fx.Node):
            continue
        written = node.args[0]
        if written.op == "placeholder" or _viewed_later(written, node, order):
            continue
        later = [u for u in written.users if u is not node and order[u] > order[node]]
        node.target = functional
        for user in later:
            user.replace_input_with(written, node)
        rewritten += 1
    return rewritten


def _viewed_later(value: torch.fx.Node, write: torch.fx.Node, order: dict) -> bool:
    """True if a view of `value` (or `value` is itself a view) is read after `write`."""
    if _is_view(value):
        return True
    for user in value.users:
        if user is not write and _is_view(user) and any(order[u] > order[write] for u in user.users):
            return True
    return False


def _is_view(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.arguments:
        return False
    alias = schema.arguments[0].alias_info
    return alias is not None and not alias.is_write and bool(schema.returns) and (
        schema.returns[0].alias_info is not None
    )
