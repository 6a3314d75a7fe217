"""FLOPs of aten nodes from their recorded shapes: how much of a model Kiln really runs.

A compile that keeps 90% of the ops but sends the one attention or convolution to eager
runs almost nothing in Kiln's kernels. Counting ops hides that, so the report also says
what share of the model's FLOPs the fallback nodes carry. The count is torch's own
(`torch.utils.flop_counter`, the formulas behind `FlopCounterMode`), run on meta tensors
built from each node's `meta["val"]`, so no real computation happens. Only contractions
have formulas there (mm, bmm, addmm, convolution, attention); elementwise work is small
beside them and is left out, which is what "share of the FLOPs" means in the report.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.fx
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode


def node_flops(nodes: Iterable[torch.fx.Node]) -> int:
    """Total contraction FLOPs of `nodes` (call_function nodes carrying `meta["val"]`)."""
    return sum(_one(node) for node in nodes)


def _one(node: torch.fx.Node) -> int:
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return 0
    try:
        args, kwargs = tree_map(_meta, (node.args, node.kwargs))
    except _NoShape:
        return 0
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            node.target(*args, **kwargs)
    except Exception:  # an op without a meta kernel: it carries no FLOPs we can count
        return 0
    return int(counter.get_total_flops())


class _NoShape(Exception):
    pass


def _meta(arg):
    """A node argument as a meta tensor of the recorded shape (no memory, no compute)."""
    if not isinstance(arg, torch.fx.Node):
        return arg
    val = arg.meta.get("val")
    if isinstance(val, torch.Tensor):
        if any(not isinstance(d, int) for d in val.shape):
            raise _NoShape
        return torch.empty_strided(tuple(val.shape), tuple(val.stride()), dtype=val.dtype, device="meta")
    if isinstance(val, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in val):
        return [torch.empty(tuple(v.shape), dtype=v.dtype, device="meta") for v in val]
    if isinstance(val, (int, float, bool)):
        return val
    raise _NoShape
