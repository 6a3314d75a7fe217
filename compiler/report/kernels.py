"""Per-kernel modeled cost for the report: the roofline of every fused group.

The same model the fusion pass minimizes (`cost_models/roofline.py`), evaluated on the
optimized IR, against the hardware the target runs on (this CPU's calibrated spec from
`kiln calibrate` when it exists, the datasheet part for HLS). Kernels are fused groups;
an op outside any group (HLS layers, unfused pipelines) is its own kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compiler.report.graph import ModelGraph

HARDWARE_OF_TARGET = {"hls": "u280"}


@dataclass
class Kernel:
    name: str
    ops: list[str]
    flops: int
    bytes_moved: int
    modeled_us: float
    path: str
    measured_us: float | None = None  # the kernel calls' median time on the real inputs (TVM)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    @property
    def modeled_flops_per_s(self) -> float:
        return self.flops / (self.modeled_us * 1e-6) if self.modeled_us else 0.0

    @property
    def measured_flops_per_s(self) -> float:
        return self.flops / (self.measured_us * 1e-6) if self.measured_us else 0.0


def hardware_for(target: str):
    from cost_models.hardware import get_hardware

    return get_hardware(HARDWARE_OF_TARGET.get(target, "cpu"))


def kernel_costs(graph: ModelGraph, target: str, measured: dict[str, Any] | None = None) -> tuple[list[Kernel], Any]:
    """Every kernel's FLOPs, bytes moved and roofline time, and the hardware used; with
    `measured` (`compiler/report/measure.py`), each kernel's measured time where taken."""
    from compiler.report.measure import measured_by_kernel
    from cost_models.roofline import group_cost
    from ir import entry_function, kiln_ops

    hw = hardware_for(target)
    nodes_by_part: dict[int, list] = {}
    for n in graph.nodes:
        if n.partition is not None:
            nodes_by_part.setdefault(n.partition, []).append(n)
    kernels: list[Kernel] = []
    for part, module in graph.modules.items():
        ops = [op for op in kiln_ops(entry_function(module)) if op.name not in ("kiln.param", "kiln.constant")]
        nodes = nodes_by_part.get(part, [])
        grouped: dict[int, list] = {}
        singles: list[tuple] = []
        for op, node in zip(ops, nodes):
            if node.group is None:
                singles.append((op, node))
            else:
                grouped.setdefault(node.group, []).append((op, node))
        prefix = f"p{part} " if len(graph.modules) > 1 else ""
        times = measured_by_kernel(measured, part, len(graph.modules) > 1)
        index = {id(op): k for k, op in enumerate(ops)}
        for gid, members in sorted(grouped.items()):
            cost = group_cost([op for op, _ in members], hw)
            paths = sorted({n.path for _, n in members if not n.path.endswith(f"(group {gid})")})
            kernels.append(Kernel(f"{prefix}group {gid}", [n.op for _, n in members], cost.flops, cost.bytes_moved,
                                  cost.seconds * 1e6, "; ".join(paths) or members[0][1].path,
                                  times.get(f"{prefix}group {gid}")))
        for op, node in singles:
            cost = group_cost([op], hw)
            kernels.append(Kernel(f"{prefix}{node.op} {node.id}", [node.op], cost.flops, cost.bytes_moved,
                                  cost.seconds * 1e6, node.path, times.get(f"{prefix}op #{index[id(op)]}")))
    return kernels, hw
