"""Shape changes: torch.compile compiles once per concrete shape (never silently eager), and
compile_model names a mismatched input in one line instead of raising a kernel's error."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from compiler import compile_model
from compiler.compiled import InputMismatchError
from compiler.shape_specialize import ShapeSpecializing, signature, specialize


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 8)
        self.scale = 0.5  # a Python float: dynamic=True passes it as a 0-d tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) * self.scale).softmax(-1)


@pytest.fixture
def reports():
    caught: list[dict] = []

    class Catch(logging.Handler):
        def emit(self, record):
            if hasattr(record, "kiln_report"):
                caught.append(record.kiln_report)

    log = logging.getLogger("compiler.torch_backend")
    handler, level = Catch(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield caught
    log.removeHandler(handler)
    log.setLevel(level)


@pytest.mark.parametrize("dynamic", [None, True], ids=["automatic", "dynamic=True"])
def test_batch_size_changes_are_compiled_not_eager(dynamic, reports):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = TwoLayer().eval()
    compiled = torch.compile(model, backend="kiln", dynamic=dynamic)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "running this graph in eager" fails the test
        with torch.no_grad():
            for batch in (4, 7, 4, 9):
                x = torch.randn(batch, 16)
                out = compiled(x)
                torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)
                # Kiln's kernels ran, not eager: eager would agree bit for bit
    assert reports and all(r["num_ops"] > 0 and r["num_kernels"] > 0 for r in reports)
    # dynamic=True: one compile per distinct batch size (4 is reused). Automatic: Dynamo's
    # first graph is static (4), its second is symbolic and compiles 7, 4 and 9 afresh.
    assert len(reports) == (3 if dynamic else 4)


def test_specializing_cache_is_bounded():
    calls = []

    def compile_fn(gm, args):
        calls.append(tuple(args[0].shape))
        return gm.forward

    gm = torch.fx.symbolic_trace(lambda x: x * 2)
    spec = ShapeSpecializing(gm, compile_fn, max_shapes=2)
    for n in (1, 2, 3, 1):
        assert torch.equal(spec(torch.ones(n)), torch.full((n,), 2.0))
    assert calls == [(1,), (2,), (3,), (1,)]  # 1 was evicted by 3, so compiled again
    assert len(spec.compiled) == 2


def test_specialize_binds_non_tensor_arguments():
    def f(x, n):
        return x.reshape(n, -1) + 1

    gm = torch.fx.symbolic_trace(f)
    specialized, positions = specialize(gm, [torch.arange(6.0), 3])
    assert positions == [0]
    assert specialized(torch.arange(6.0)).shape == (3, 2)
    assert signature([torch.ones(2, 3), 5]) == (((2, 3), torch.float32), 5)


def test_compile_model_names_the_mismatched_input():
    torch.manual_seed(0)
    model = TwoLayer().eval()
    x = torch.randn(4, 16)
    cm = compile_model(model, (x,), target="tvm")
    torch.testing.assert_close(cm(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputMismatchError, match=r"input 0 was compiled as \(4, 16\) float32, called with \(5, 16\)"):
        cm(torch.randn(5, 16))
    with pytest.raises(InputMismatchError, match="float64"):
        cm(x.double())
