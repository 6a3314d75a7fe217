"""Plan expert placement for a model and check a run against it (used by `kiln run` ranks).

The plan is made once, on rank 0, and broadcast, because a time-limited solve need not give
the same answer twice. It is made on the IR when the model captures into one Kiln graph
(the pass writes `kiln.expert_devices` on each router and the runtime reads them back), and
otherwise (HF MoE models whose experts loop over data-dependent index sets) from the same
`decide` on the torch model's recognized routers; the report says which.
"""

from __future__ import annotations

from typing import Any

import torch

from compiler.trace_experts import trace_model
from passes.experts.cost import Placement, evaluate
from passes.experts.trace import ExpertsError, check_matches, load_trace


def find_pass(pipeline: str):
    from passes import parse_pipeline
    from passes.experts import PlaceExpertsPass

    passes = parse_pipeline(pipeline)
    found = [p for p in passes if isinstance(p, PlaceExpertsPass)]
    if not found:
        raise ExpertsError(f"pipeline {pipeline!r} has no place-experts pass")
    return passes, found[-1]


def plan(model: torch.nn.Module, inputs: tuple[Any, ...], pipeline: str, world: int) -> tuple[Placement, dict]:
    """(placement, summary); summary['planned_on'] says 'ir' or why not."""
    from compiler.distributed.plan import PlanError, capture
    from compiler.driver import module_decisions
    from ir import parse_module
    from passes import run_pipeline
    from passes.experts import read_placement
    from passes.experts.decide import decide

    passes, pe = find_pass(pipeline)
    if pe.devices != world:
        raise ExpertsError(f"place-experts plans for devices={pe.devices} but the run has {world} ranks")
    try:
        captured = capture(model, inputs)
    except PlanError as err:
        why = str(err).splitlines()[0][:160]
    else:
        module = parse_module(captured.module_text)
        run_pipeline(module, passes)
        summary = dict(module_decisions(module).get("experts", {}))
        summary["planned_on"] = "ir"
        return read_placement(module, world), summary
    here = trace_model(model, [inputs], "model")
    trace = load_trace(pe.trace)
    check_matches(trace, here.layers, here.experts, "the model")
    d = decide(trace, world, pe.capacity or None, pe.replicate, pe.solver, pe.time_limit)
    summary = dict(d.summary)
    summary["planned_on"] = f"torch routers (capture failed: {why})"
    return d.placement, summary


def predict(model: torch.nn.Module, inputs: tuple[Any, ...], placement: Placement) -> dict[str, Any]:
    """What the plan says this very input will move: replay its eager routing on the placement."""
    trace = trace_model(model, [inputs], "run input")
    cost = evaluate(trace, placement)
    return {"predicted_dispatch_tokens": cost.dispatched, "predicted_return_tokens": cost.returned,
            "predicted_cross_tokens": cost.cross, "predicted_loads": cost.loads.tolist()}
