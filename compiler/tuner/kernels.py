"""The kernels of a model that have knobs, keyed and ordered by their share of its time.

The model goes through exactly what `kiln compile` does before a build (capture,
partitions, the target's pass pipeline), so the kernels found here are the ones a later
compile looks up, under the same functional keys. Equivalent kernels (the same layer
repeated, or shared with another model) are one task; its share of the model's time is
the roofline estimate of one run times how often the model runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ir.program import Program


@dataclass
class KernelTask:
    key: str
    label: str  # "gpt/kiln_group_4"
    ops: str  # "add+pow+reduce+..."
    program: Program  # the kernel on its own (`ir.extract`)
    features: dict[str, float]
    count: int  # how many times one call of the model runs it
    roofline_s: float  # modeled seconds per run
    workload: str  # the model it came from
    # its search space for a thread count (`knob_space.KernelKnobs`); None: the table's
    knob_space: Callable[[int], Any] | None = None

    @property
    def share_s(self) -> float:
        return self.count * self.roofline_s

    def ir_text(self) -> str:
        return self.program.text()


def collect_tasks(
    model: torch.nn.Module, inputs: Sequence[Any], workload: str, target: str,
    pipeline: str | None = None,
) -> list[KernelTask]:
    """The model's distinct TIR kernels, largest share of modeled time first."""
    from backends import get_backend
    from backends.tvm.dense_knobs import dense_kernels
    from backends.tvm.knob_space import knob_space_of
    from backends.tvm.knobs import extract_site, kernel_versions, tir_kernels
    from compiler.capture import convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from compiler.capture.partition import IGNORED
    from cost_models.features import kernel_features
    from cost_models.hardware import get_hardware
    from ir.hashing import kernel_key
    from passes import run_pipeline

    backend = get_backend("tvm")
    hw = get_hardware("cpu")
    plan = plan_partitions(from_model(model.eval(), inputs))
    tasks: dict[str, KernelTask] = {}
    for part in plan.partitions():
        conversion = convert_nodes(part, plan.consts, users_outside(part, IGNORED))
        program = conversion.program
        run_pipeline(program.module, pipeline if pipeline is not None else backend.pipeline())
        # scheduled kernels (their space read from the PrimFunc) and packed linears (their
        # register tiles, `dense_knobs.py`)
        sites = [(site, None) for site in tir_kernels(program)] + dense_kernels(program)
        for site, dense in sites:
            sub = extract_site(site, program)
            key = kernel_key(sub, target, kernel_versions())
            if key in tasks:
                tasks[key].count += 1
                continue
            features = kernel_features(list(site.ops), hw)
            tasks[key] = KernelTask(
                key=key,
                label=f"{workload}/{site.name}",
                ops="+".join(op.name.removeprefix("kiln.") for op in site.ops),
                program=sub,
                features=features,
                count=1,
                roofline_s=features["roofline_us"] * 1e-6,
                workload=workload,
                knob_space=knob_space_of(sub, target) if dense is None else (lambda _t, space=dense: space),
            )
    return sorted(tasks.values(), key=lambda t: -t.share_s)
