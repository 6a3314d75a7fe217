"""What the driver records for the report while it compiles: the execution order of
partitions and eager fallback nodes, so the report can draw the fallback islands between
the compiled partitions. Kept free of heavy imports: the driver calls it on every compile."""

from __future__ import annotations

from typing import Any


def partition_step(index: int) -> dict[str, Any]:
    return {"kind": "partition", "index": index}


def eager_step(node: Any) -> dict[str, Any]:
    """An FX node that runs in eager PyTorch: its op, output shape and dtype."""
    val = node.meta.get("val") if hasattr(node, "meta") else None
    shape = "x".join(str(d) for d in val.shape) if hasattr(val, "shape") else ""
    dtype = str(val.dtype).removeprefix("torch.") if hasattr(val, "dtype") else ""
    op = getattr(node.target, "__name__", str(node.target))
    return {"kind": "eager", "op": str(op), "node": node.name, "shape": shape, "dtype": dtype}


def without_ir(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the optimized IR text it carries for the HTML report (the JSON
    printed by `kiln compile --json` stays small; `--out` writes the IR to .mlir files)."""
    out = dict(report)
    if "partitions" in out:
        out["partitions"] = [{k: v for k, v in p.items() if k != "optimized_ir"} for p in out["partitions"]]
    return out
