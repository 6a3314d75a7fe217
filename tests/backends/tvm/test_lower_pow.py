"""`kiln.pow` with a small constant exponent lowers to multiplies (or `sqrt`), not to the
scalar `powf` call LLVM makes of Relax's `power`: GPT-2's tanh GELU cubes its input, and
that one elementwise group cost as much as the rest of the layer's together."""

from __future__ import annotations

import torch
from torch import nn

from compiler import compile_model


class Powers(nn.Module):
    def forward(self, x: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = x.abs()
        floats = torch.pow(x, 3.0) + x**2 + x.pow(4) + a**0.5 + a.pow(2.5) + torch.pow(a, x)
        return floats, n**3 + n.pow(2) + n**0 + n.pow(5)


def _relax_text(model: nn.Module, inputs: tuple) -> str:
    from backends.tvm.lower import lower_program
    from backends.tvm.pipeline import kiln_pipeline
    from compiler.capture import convert_nodes, from_model, plan_partitions
    from compiler.capture.convert import users_outside
    from passes import run_pipeline

    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    program = convert_nodes(part, plan.consts, users_outside(part)).program
    run_pipeline(program.module, kiln_pipeline())
    return lower_program(program).module.script()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(7, 33), torch.randint(-5, 6, (7, 33))


def test_constant_exponents_match_eager_on_odd_shapes() -> None:
    model, inputs = Powers().eval(), _inputs()
    compiled = compile_model(model, inputs, use_cache=False)
    got, want = compiled(*inputs), model(*inputs)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[1], want[1])  # integer powers stay exact
    assert [s["kind"] for s in compiled.report["steps"]] == ["partition"]


def test_an_integer_pow_with_a_tensor_exponent_runs_in_eager() -> None:
    """TVM's `power` is float-only (the build crashed with a TIR check before); Kiln runs
    that one op in eager and says which, and the rest of the graph stays compiled."""

    class TensorExponent(nn.Module):
        def forward(self, n: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            return (n + 1).pow(e) * 2

    n, e = torch.randint(-5, 6, (7, 33)), torch.randint(0, 4, (7, 33))
    compiled = compile_model(TensorExponent(), (n, e), use_cache=False)
    assert torch.equal(compiled(n, e), TensorExponent()(n, e))
    eager = [s for s in compiled.report["steps"] if s["kind"] == "eager"]
    assert [s["op"] for s in eager] == ["pow.Tensor_Tensor"], compiled.report["steps"]


def test_only_the_other_exponents_keep_power() -> None:
    text = _relax_text(Powers().eval(), _inputs())
    # a**2.5 and a**x are left; x**2/3/4, a**0.5 and every integer power are rewritten
    assert text.count("R.power(") == 2, text
    assert "R.sqrt(" in text
