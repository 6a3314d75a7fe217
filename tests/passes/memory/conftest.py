"""The zoo captured and fused once per session, shared by the memory tests (capture and
the fuse ILP dominate their time). Each test parses its own copy of the IR text."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from examples.zoo import ZOO
from ir import parse_module, print_module
from ir.interpreter import run_function
from ir.program import Program
from passes import run_pipeline

TVM_FUSION = "fold-constants,kiln-canonicalize,cse,dce,fuse{fuse-contractions=false multi-reduction=true}"


@dataclass
class Fused:
    text: str
    params: dict[str, torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    reference: list[torch.Tensor]  # the interpreter's outputs before any memory planning

    def program(self) -> Program:
        return Program(parse_module(self.text), self.params)


@pytest.fixture(scope="session")
def fused_zoo() -> dict[str, Fused]:
    out = {}
    for name, factory in ZOO.items():
        model, inputs = factory()
        plan = plan_partitions(from_model(model, inputs))
        (part,) = plan.partitions()
        program = convert_nodes(part, plan.consts, users_outside(part)).program
        with torch.no_grad():
            reference = run_function(program.forward, inputs, program.params)
        run_pipeline(program.module, TVM_FUSION)
        out[name] = Fused(print_module(program.module), program.params, inputs, reference)
    return out
