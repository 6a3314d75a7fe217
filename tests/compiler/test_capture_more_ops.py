"""The converters of compiler/capture/table_{extra,spatial,rnn}.py, through the TVM backend.

Each case is a small model around one aten op, on odd shapes, compiled with
`compile_model(..., target="tvm")`: the op must not fall back (the report's
`fallback_ops` names the aten op otherwise) and the outputs must match eager PyTorch.
The declined combinations must fall back, naming the op, and still match eager.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compiler import compile_model
from passes import DEFAULT_PIPELINE

TOL = {"atol": 1e-4, "rtol": 1e-4}


class Fn(nn.Module):
    """A model that is one function of its inputs (plus optional parameters)."""

    def __init__(self, fn: Callable[..., torch.Tensor], **params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(self, *xs)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_g(sum(shape)))


def ints(high: int, *shape: int, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=_g(high + sum(shape)))


def _compile(model: nn.Module, inputs: tuple[torch.Tensor, ...], **options):
    compiled = compile_model(model, inputs, target="tvm", use_cache=False, **options)
    with torch.no_grad():
        expected = model(*inputs)
    got = compiled(*inputs)
    torch.testing.assert_close(got, expected, **TOL)
    return compiled


CASES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[], tuple], dict]] = {
    "and_or_bool": (lambda m, a, b: ((a > 0) & (b < 0.5)) | (a > b), lambda: (randn(3, 5), randn(1, 5)), {}),
    "to_device_and_dtype": (lambda m, x: x.to("cpu", torch.float64) * 2, lambda: (randn(3, 5),), {}),
    "greater_scalar": (lambda m, x: torch.greater(x, 0.25).float() + torch.less_equal(x, x * 0.5).float(),
                       lambda: (randn(3, 7),), {}),
    "zeros_ones_full_like": (lambda m, x: torch.zeros_like(x) + torch.ones_like(x) * x + torch.full_like(x, 2.5),
                             lambda: (randn(2, 3, 5),), {}),
    "new_full_zeros": (lambda m, x: x.new_full((3, 5), 1.5) * x + x.new_zeros(3, 1) + torch.empty_like(x).zero_() + x.clone().fill_(0.25),
                       lambda: (randn(3, 5),), {}),
    "stack": (lambda m, a, b: torch.stack([a, b * 2], dim=1), lambda: (randn(3, 5), randn(3, 5)), {}),
    "index_two_tensors": (lambda m, x, i, j: x[i, j], lambda: (randn(5, 7, 3), ints(5, 4, 1), ints(7, 1, 6)), {}),
    "index_middle_dims": (lambda m, x, i: x[:, i], lambda: (randn(3, 7, 2), ints(7, 5, low=-7)), {}),
    "index_batch_argmax": (lambda m, x, t: x[torch.arange(x.shape[0]), t.argmax(-1)],
                           lambda: (randn(3, 5, 4), ints(9, 3, 5)), {}),
    "gather": (lambda m, x, i: torch.gather(x, 1, i), lambda: (randn(3, 7, 5), ints(7, 3, 4, 2)), {}),
    "gather_2d": (lambda m, x, i: torch.gather(x, 1, i) + 1, lambda: (ints(50, 2, 9), ints(9, 2, 5)), {}),
    "cumsum_int": (lambda m, x: torch.cumsum(x.ne(0).int(), dim=1) * x.ne(0).int(), lambda: (ints(3, 3, 11),), {}),
    "floor_divide_int": (lambda m, a, b: torch.floor_divide(a, b) + a // 3 + torch.floor_divide(a, -4),
                         lambda: (ints(50, 3, 7, low=-50), ints(9, 3, 7, low=1) * torch.tensor([1, -1, 1, -1, 1, -1, 1])),
                         {}),
    "argmax_argmin": (lambda m, x: torch.stack([x.argmax(1), x.argmin(1)]), lambda: (ints(4, 3, 7, 2),), {}),
    "argmax_flat": (lambda m, x: x.argmax() + x.argmin(-1, keepdim=True), lambda: (randn(3, 5),), {}),
    "pad_constant": (lambda m, x: F.pad(x, (1, 2, 0, 3), value=0.5) + 1, lambda: (randn(2, 3, 5, 4),), {}),
    "pad_crop": (lambda m, x: F.pad(x, (-1, 2)) * 2, lambda: (randn(2, 3, 5),), {}),
    "adaptive_avg_pool1d": (lambda m, x: F.adaptive_avg_pool1d(x, 1) + F.adaptive_avg_pool1d(x, 3).sum(-1, True),
                            lambda: (randn(2, 5, 9),), {}),
    "avg_pool2d_global_ceil": (lambda m, x: F.avg_pool2d(x, 7, ceil_mode=True), lambda: (randn(2, 3, 3, 3),), {}),
    "conv1d": (lambda m, x: F.conv1d(x, m.w, m.b, stride=2, padding=1), lambda: (randn(2, 4, 11),),
               {"w": randn(6, 4, 3), "b": randn(6)}),
    "conv1d_groups_dilation": (lambda m, x: F.conv1d(x, m.w, None, padding=3, dilation=2, groups=2),
                               lambda: (randn(2, 4, 9),), {"w": randn(6, 2, 4)}),
    "conv1d_same": (lambda m, x: F.conv1d(x, m.w, padding="same"), lambda: (randn(1, 3, 10),), {"w": randn(5, 3, 4)}),
    "conv2d_same_valid": (lambda m, x: F.conv2d(F.conv2d(x, m.w, padding="same"), m.v, padding="valid"),
                          lambda: (randn(2, 3, 7, 6),), {"w": randn(4, 3, 2, 3), "v": randn(2, 4, 3, 3)}),
    "group_norm": (lambda m, x: F.group_norm(x, 3, m.w, m.b, eps=1e-5), lambda: (randn(2, 6, 5, 3) * 3 + 1,),
                   {"w": randn(6), "b": randn(6)}),
    "group_norm_no_affine": (lambda m, x: F.group_norm(x, 2), lambda: (randn(3, 4, 7),), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_runs_in_kiln_and_matches_eager(name: str) -> None:
    fn, make_inputs, params = CASES[name]
    compiled = _compile(Fn(fn, **params).eval(), make_inputs())
    assert compiled.report["fallback_ops"] == []


DECLINED: dict[str, tuple[Callable[..., torch.Tensor], Callable[[], tuple], str]] = {
    "bitwise_and_ints": (lambda m, a, b: (a & b) + 1, lambda: (ints(8, 3, 4), ints(8, 3, 4)), "aten.__and__.Tensor"),
    "cumsum_float": (lambda m, x: torch.cumsum(x * 2, dim=-1), lambda: (randn(3, 4),), "aten.cumsum"),
    "pad_reflect": (lambda m, x: F.pad(x * 2, (1, 1), mode="reflect"), lambda: (randn(2, 3, 5),), "aten.pad"),
    "bool_mask_index": (lambda m, x: x[x > 0].sum(), lambda: (randn(3, 5),), "aten.index.Tensor"),
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_declined_combinations_fall_back_naming_the_op(name: str) -> None:
    fn, make_inputs, op = DECLINED[name]
    compiled = _compile(Fn(fn).eval(), make_inputs())
    assert op in {f["op"] for f in compiled.report["fallback_ops"]}


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], **kwargs) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = cell(5, 6, **kwargs)

    def forward(self, x: torch.Tensor):
        out, state = self.rnn(x)
        return (out, *state) if isinstance(state, tuple) else (out, state)


@pytest.mark.parametrize(
    ("cell", "kwargs", "shape"),
    [
        (nn.LSTM, {"num_layers": 2, "batch_first": True}, (3, 4, 5)),
        (nn.LSTM, {"bidirectional": True}, (4, 2, 5)),
        (nn.GRU, {"num_layers": 2, "batch_first": True, "bidirectional": True}, (2, 3, 5)),
        (nn.RNN, {"bias": False}, (3, 2, 5)),
    ],
    ids=["lstm-2layer", "lstm-bidir-seqfirst", "gru-2layer-bidir", "rnn-tanh-nobias"],
)
def test_recurrent_layers_unroll_and_match_eager(cell, kwargs, shape) -> None:
    model = Recurrent(cell, **kwargs).eval()
    # The unrolled graph has 50-150 ops; the fusion and memory ILPs are not what is tested
    # here (and take ~20 s on it), so the light pipeline keeps this test fast.
    compiled = _compile(model, (randn(*shape),), pipeline=DEFAULT_PIPELINE)
    assert compiled.report["fallback_ops"] == []


def test_lstm_with_projections_falls_back() -> None:
    model = Recurrent(nn.LSTM, proj_size=3, batch_first=True).eval()
    compiled = _compile(model, (randn(2, 3, 5),))
    assert "aten.lstm.input" in {f["op"] for f in compiled.report["fallback_ops"]}


@pytest.mark.parametrize("target", ["tvm", "eager"])
def test_constant_and_passthrough_outputs_are_fresh_on_every_call(target: str) -> None:
    """Switch Transformer writes into `zeros_like(hidden)` after the graph returns it: a
    folded constant output must not be the same storage on the next call."""
    model = Fn(lambda m, x: (torch.zeros_like(x), x.clone(), x * 2)).eval()
    x = randn(3, 4)
    compiled = compile_model(model, (x,), target=target, use_cache=False)
    zeros, same, _ = compiled(x)
    zeros += 1
    same += 1
    again, _, _ = compiled(x)
    assert bool((again == 0).all())
    torch.testing.assert_close(x, randn(3, 4))  # the input was not written through the output
