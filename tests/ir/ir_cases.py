"""One table of op cases: inputs, options, and the expected result written in plain torch.

Each `Case` says how to make one kiln op on random inputs and what eager torch computes
for it. The expected side is written here, independently of the op's `reference` (by a
formula where that is short: attention, norms, conv and pooling through `unfold`, MoE
routing as a Python loop), so a wrong reference cannot agree with itself.

`test_ops.py` runs every case through the interpreter; `test_text.py` prints and parses a
module holding all of them. Sources (`kiln.param`, `kiln.constant`) have no operands and
are tested by hand in `test_ops.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ir.core import KilnOp
from ir.ops.attention import AttentionOp
from ir.ops.contraction import Conv2dOp, LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, COMPARE_OPS, UNARY_OPS, CastOp, ClampOp, WhereOp
from ir.ops.moe import MoeCombineOp, MoeDispatchOp, TopkOp
from ir.ops.movement import ConcatOp, EmbeddingOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from ir.ops.normalization import BatchNormOp, LayerNormOp, LogSoftmaxOp, RmsNormOp, SoftmaxOp
from ir.ops.pooling import Pool2dOp
from ir.ops.quant import DequantizeOp, QuantizeOp
from ir.ops.reduction import ReduceOp

Expected = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]


@dataclass(frozen=True)
class Case:
    op: type[KilnOp]
    label: str
    inputs: tuple[torch.Tensor | None, ...]
    expected: Expected  # called with the inputs (None included) and the options
    options: dict[str, Any] = field(default_factory=dict)
    atol: float = 1e-5
    rtol: float = 1.3e-6

    @property
    def id(self) -> str:
        return f"{self.op.name}-{self.label}"

    def expect(self) -> tuple[torch.Tensor, ...]:
        out = self.expected(*self.inputs, **self.options)
        return out if isinstance(out, tuple) else (out,)


_gen = torch.Generator().manual_seed(0)


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=_gen, dtype=dtype)


def rand(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=_gen)


def randint(high: int, *shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=_gen, dtype=dtype)


def randbool(*shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=_gen) > 0.5


CASES: list[Case] = []


def case(op, label, inputs, expected, atol=1e-5, **options) -> None:
    CASES.append(Case(op, label, tuple(inputs), expected, options, atol))


# ---- elementwise ---------------------------------------------------------------------
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
UNARY_EXPECTED: dict[str, tuple[Callable, Callable[[], torch.Tensor]]] = {
    # name: (formula, input maker); inputs kept inside each function's domain.
    "relu": (lambda x: torch.where(x > 0, x, torch.zeros_like(x)), lambda: randn(3, 5)),
    "silu": (lambda x: x / (1 + torch.exp(-x)), lambda: randn(3, 5)),
    "sigmoid": (lambda x: 1 / (1 + torch.exp(-x)), lambda: randn(3, 5)),
    "tanh": (lambda x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1), lambda: randn(3, 5)),
    "exp": (lambda x: math.e**x, lambda: randn(3, 5)),
    "log": (lambda x: torch.log2(x) * math.log(2), lambda: rand(3, 5, low=0.1, high=4)),
    "neg": (lambda x: 0 - x, lambda: randn(3, 5)),
    "abs": (lambda x: torch.where(x < 0, -x, x), lambda: randn(3, 5)),
    "sqrt": (lambda x: x**0.5, lambda: rand(3, 5, low=0.1, high=4)),
    "rsqrt": (lambda x: x**-0.5, lambda: rand(3, 5, low=0.1, high=4)),
    "reciprocal": (lambda x: 1 / x, lambda: rand(3, 5, low=0.5, high=2) * torch.sign(randn(3, 5))),
    "erf": (lambda x: torch.special.erf(x), lambda: randn(3, 5)),
    "sin": (lambda x: torch.sin(x), lambda: randn(3, 5)),
    "cos": (lambda x: torch.sin(x + math.pi / 2), lambda: randn(3, 5)),
    "logical_not": (lambda x: ~x, lambda: randbool(3, 5)),
}
for _name, (_fn, _make) in UNARY_EXPECTED.items():
    case(UNARY_OPS[_name], "f32", [_make()], lambda x, f=_fn: f(x))
case(UNARY_OPS["exp"], "f64-rank0", [randn(dtype=torch.float64)], lambda x: math.e**x)
case(UNARY_OPS["relu"], "i64", [randint(9, 4) - 4], lambda x: torch.where(x > 0, x, 0))


def _gelu_erf(x, **_):
    return 0.5 * x * (1 + torch.special.erf(x / math.sqrt(2)))


def _gelu_tanh(x, **_):
    return 0.5 * x * (1 + torch.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3)))


case(UNARY_OPS["gelu"], "exact", [randn(3, 5)], _gelu_erf)
case(UNARY_OPS["gelu"], "none", [randn(3, 5)], _gelu_erf, approximate="none")
case(UNARY_OPS["gelu"], "tanh", [randn(3, 5)], _gelu_tanh, approximate="tanh")

BINARY_EXPECTED: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: torch.exp(b * torch.log(a)),
    "maximum": lambda a, b: torch.where(a >= b, a, b),
    "minimum": lambda a, b: torch.where(a <= b, a, b),
}
for _name, _fn in BINARY_EXPECTED.items():
    positive = _name in ("pow", "div")
    _a = rand(3, 1, 5, low=0.5, high=2) if positive else randn(3, 1, 5)
    _b = rand(4, 5, low=0.5, high=2) if positive else randn(4, 5)
    case(BINARY_OPS[_name], "broadcast", [_a, _b], lambda a, b, f=_fn: f(a, b))
    case(BINARY_OPS[_name], "same-shape", [_a[:, 0], _b[:3]], lambda a, b, f=_fn: f(a, b))
case(BINARY_OPS["add"], "promote-i64-f32", [randint(5, 2, 3), randn(3)], lambda a, b: a.float() + b)
case(BINARY_OPS["mul"], "scalar-rhs", [randn(2, 3), torch.tensor(2.5)], lambda a, b: a * 2.5)
case(BINARY_OPS["logical_and"], "broadcast", [randbool(4, 1), randbool(3)], lambda a, b: a & b)
case(BINARY_OPS["logical_or"], "broadcast", [randbool(4, 1), randbool(3)], lambda a, b: a | b)

COMPARE_EXPECTED: dict[str, Callable] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
for _name, _fn in COMPARE_EXPECTED.items():
    # Small integers as floats so that ties (where le/lt and ge/gt differ) occur.
    _a, _b = randint(3, 2, 1, 4).float(), randint(3, 3, 4).float()
    case(COMPARE_OPS[_name], "broadcast", [_a, _b], lambda a, b, f=_fn: f(a, b))

case(
    WhereOp,
    "broadcast",
    [randbool(4, 1), randn(1, 5), randn(5)],
    lambda c, a, b: c * a + (~c) * b,
)
case(
    WhereOp,
    "promote",
    [randbool(3), randn(3, dtype=torch.float64), randn(2, 3)],
    lambda c, a, b: torch.where(c, a, b.double()),
)
for _src, _dst in [
    (torch.float32, "float16"),
    (torch.float32, "bfloat16"),
    (torch.float32, "int32"),
    (torch.int64, "float32"),
    (torch.float32, "bool"),
    (torch.bool, "int8"),
]:
    _x = randbool(2, 3) if _src == torch.bool else (randn(2, 3) * 4).to(_src)
    if _dst == "bool":
        _x[0, 0] = 0.0
    case(
        CastOp,
        f"{_src}-to-{_dst}".replace("torch.", ""),
        [_x],
        lambda x, dtype: x.to(getattr(torch, dtype)),
        dtype=_dst,
    )
case(
    ClampOp,
    "min-max",
    [randn(3, 4)],
    lambda x, **_: torch.maximum(torch.minimum(x, torch.tensor(0.5)), torch.tensor(-0.5)),
    min=-0.5,
    max=0.5,
)
case(ClampOp, "min-only", [randn(3, 4)], lambda x, **_: torch.where(x < 0.1, 0.1, x), min=0.1)
case(ClampOp, "max-only", [randn(3, 4)], lambda x, **_: torch.where(x > -0.2, -0.2, x), max=-0.2)
case(ClampOp, "int-bounds", [randn(3, 4) * 3], lambda x, **_: x.clamp(-1.0, 1.0), min=-1, max=1)
case(
    ClampOp,
    "i64-input",
    [randint(11, 6) - 5],
    lambda x, **_: torch.tensor([min(max(v, -2), 3) for v in x.tolist()]),
    min=-2,
    max=3,
)


# ---- contractions --------------------------------------------------------------------
def _matmul(a, b):
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


case(MatmulOp, "2d", [randn(4, 8), randn(8, 5)], _matmul)
case(MatmulOp, "batched-broadcast", [randn(2, 1, 4, 8), randn(3, 8, 5)], _matmul)
case(MatmulOp, "batched-same", [randn(3, 4, 6), randn(3, 6, 2)], _matmul)


def _linear(x, w, b=None):
    out = _matmul(x, w.t())
    return out if b is None else out + b


case(LinearOp, "bias", [randn(4, 8), randn(16, 8), randn(16)], _linear)
case(LinearOp, "no-bias", [randn(4, 8), randn(16, 8), None], _linear)
case(LinearOp, "rank3", [randn(2, 3, 8), randn(5, 8), randn(5)], _linear)


def _conv2d(x, w, b, stride, padding, dilation, groups):
    """conv2d as unfold + per-group matmul."""
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = cols.view(n, groups, cg * kh * kw, oh * ow)
    wg = w.reshape(groups, o // groups, cg * kh * kw)
    out = torch.einsum("gok,ngkl->ngol", wg, cols).reshape(n, o, oh, ow)
    return out if b is None else out + b.view(1, o, 1, 1)


for _label, _x, _w, _b, _opts in [
    ("basic", randn(2, 3, 8, 8), randn(4, 3, 3, 3), None, ((1, 1), (0, 0), (1, 1), 1)),
    (
        "stride2-pad1-bias",
        randn(2, 3, 9, 7),
        randn(6, 3, 3, 3),
        randn(6),
        ((2, 2), (1, 1), (1, 1), 1),
    ),
    ("groups2-rect", randn(1, 4, 8, 10), randn(6, 2, 3, 2), randn(6), ((1, 2), (2, 0), (1, 1), 2)),
    ("depthwise-dilated", randn(1, 4, 9, 9), randn(4, 1, 3, 3), None, ((1, 1), (2, 2), (2, 2), 4)),
]:
    _s, _p, _d, _g = _opts
    case(
        Conv2dOp,
        _label,
        [_x, _w, _b],
        _conv2d,
        atol=1e-4,
        stride=_s,
        padding=_p,
        dilation=_d,
        groups=_g,
    )


# ---- normalization -------------------------------------------------------------------
def _softmax(x, dim):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def _log_softmax(x, dim):
    m = x.amax(dim, keepdim=True)
    return x - m - torch.log(torch.exp(x - m).sum(dim, keepdim=True))


for _dim in (-1, 1, 0):
    case(SoftmaxOp, f"dim{_dim}", [randn(2, 3, 4)], _softmax, dim=_dim)
    case(LogSoftmaxOp, f"dim{_dim}", [randn(2, 3, 4)], _log_softmax, dim=_dim)


def _layer_norm(x, w, b, eps, ndims):
    dims = tuple(range(-ndims, 0))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


case(LayerNormOp, "plain", [randn(4, 16), None, None], _layer_norm, eps=1e-5, ndims=1)
case(LayerNormOp, "affine", [randn(2, 3, 8), randn(8), randn(8)], _layer_norm, eps=1e-5, ndims=1)
case(LayerNormOp, "weight-only", [randn(2, 3, 8), randn(8), None], _layer_norm, eps=1e-6, ndims=1)
case(LayerNormOp, "bias-only", [randn(2, 3, 8), None, randn(8)], _layer_norm, eps=1e-5, ndims=1)
case(
    LayerNormOp,
    "ndims2",
    [randn(2, 3, 8), randn(3, 8), randn(3, 8)],
    _layer_norm,
    eps=1e-5,
    ndims=2,
)


def _rms_norm(x, w, eps, ndims):
    dims = tuple(range(-ndims, 0))
    y = x / torch.sqrt((x * x).mean(dims, keepdim=True) + eps)
    return y if w is None else y * w


case(RmsNormOp, "weight", [randn(2, 3, 8), randn(8)], _rms_norm, eps=1e-6, ndims=1)
case(RmsNormOp, "plain", [randn(4, 8), None], _rms_norm, eps=1e-5, ndims=1)
case(RmsNormOp, "ndims2", [randn(2, 3, 8), randn(3, 8)], _rms_norm, eps=1e-5, ndims=2)


def _batch_norm(x, mean, var, w, b, eps):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * w.view(shape) + b.view(
        shape
    )


case(
    BatchNormOp,
    "nchw",
    [randn(2, 3, 4, 5), randn(3), rand(3, low=0.5, high=2), randn(3), randn(3)],
    _batch_norm,
    eps=1e-5,
)
case(
    BatchNormOp,
    "nc",
    [randn(4, 3), randn(3), rand(3, low=0.5, high=2), randn(3), randn(3)],
    _batch_norm,
    eps=1e-3,
)


# ---- attention -----------------------------------------------------------------------
def _attention(q, k, v, mask=None, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        s = s.masked_fill(~keep, -math.inf)
    if mask is not None and mask.dtype == torch.bool:
        s = s.masked_fill(~mask, -math.inf)
    elif mask is not None:
        s = s + mask
    return _matmul(_softmax(s, -1), v)


def _keep_mask(*shape: int) -> torch.Tensor:
    m = randbool(*shape)
    m[..., 0] = True  # no fully masked row (softmax of all -inf is nan)
    return m


_q4, _k6, _v6 = randn(2, 3, 4, 8), randn(2, 3, 6, 8), randn(2, 3, 6, 5)
case(AttentionOp, "plain", [_q4, _k6, _v6, None], _attention, causal=False)
case(AttentionOp, "scale", [_q4, _k6, _v6, None], _attention, causal=False, scale=0.3)
case(
    AttentionOp,
    "causal",
    [randn(2, 6, 8), randn(2, 6, 8), randn(2, 6, 8), None],
    _attention,
    causal=True,
)
case(
    AttentionOp,
    "causal-4d",
    [randn(1, 2, 5, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4), None],
    _attention,
    causal=True,
    scale=0.5,
)
case(AttentionOp, "bool-mask", [_q4, _k6, _v6, _keep_mask(4, 6)], _attention, causal=False)
case(
    AttentionOp,
    "bool-mask-batched",
    [_q4, _k6, _v6, _keep_mask(2, 1, 4, 6)],
    _attention,
    causal=False,
)
case(AttentionOp, "float-mask", [_q4, _k6, _v6, randn(2, 1, 4, 6)], _attention, causal=False)
case(
    AttentionOp,
    "batch-broadcast",
    [randn(2, 3, 4, 8), randn(1, 3, 6, 8), randn(1, 3, 6, 8), None],
    _attention,
    causal=False,
)


# ---- data movement -------------------------------------------------------------------
case(
    ReshapeOp, "merge", [randn(2, 3, 4)], lambda x, shape: x.contiguous().view(*shape), shape=(6, 4)
)
case(ReshapeOp, "split", [randn(6, 4)], lambda x, shape: x.view(*shape), shape=(2, 3, 2, 2))
case(ReshapeOp, "to-rank0", [randn(1, 1)], lambda x, shape: x.view(()), shape=())
case(PermuteOp, "3d", [randn(2, 3, 4)], lambda x, dims: x.movedim(2, 0), dims=(2, 0, 1))
case(PermuteOp, "transpose", [randn(3, 5)], lambda x, dims: x.t(), dims=(1, 0))
case(SliceOp, "step2", [randn(3, 8, 2)], lambda x, **_: x[:, 1:7:2], dim=1, start=1, end=7, step=2)
case(
    SliceOp,
    "neg-dim-step3",
    [randn(2, 10)],
    lambda x, **_: x[:, 0:10:3],
    dim=-1,
    start=0,
    end=10,
    step=3,
)
case(SliceOp, "dim0", [randn(5, 3)], lambda x, **_: x[2:5], dim=0, start=2, end=5, step=1)
case(SliceOp, "empty", [randn(4, 3)], lambda x, **_: x[2:2], dim=0, start=2, end=2, step=1)
case(ExpandOp, "new-dims", [randn(3, 1)], lambda x, shape: x.repeat(2, 1, 4), shape=(2, 3, 4))
case(ExpandOp, "same-rank", [randn(1, 4)], lambda x, shape: x.repeat(3, 1), shape=(3, 4))
case(
    ConcatOp,
    "dim1",
    [randn(2, 1, 4), randn(2, 3, 4), randn(2, 2, 4)],
    lambda *xs, dim: torch.cat(xs, dim),
    dim=1,
)
case(ConcatOp, "dim-neg1", [randn(3, 2), randn(3, 5)], lambda *xs, dim: torch.cat(xs, dim), dim=-1)
case(ConcatOp, "single", [randn(3, 2)], lambda x, dim: x.clone(), dim=0)
case(EmbeddingOp, "i64", [randn(10, 4), randint(10, 2, 3)], lambda w, idx: w[idx])
case(
    EmbeddingOp,
    "i32",
    [randn(7, 3), randint(7, 5, dtype=torch.int32)],
    lambda w, idx: w[idx.long()],
)


# ---- reductions and pooling ----------------------------------------------------------
def _reduce(x, kind, dims, keepdim):
    dims = sorted(d % x.dim() for d in dims)
    rest = [d for d in range(x.dim()) if d not in dims]
    flat = x.permute(*rest, *dims).reshape(*[x.shape[d] for d in rest], -1)
    out = {
        "sum": flat.sum,
        "mean": flat.mean,
        "max": lambda d: flat.max(d).values,
        "min": lambda d: flat.min(d).values,
        "prod": flat.prod,
    }[kind](-1)
    if keepdim:
        out = out.reshape([1 if d in dims else s for d, s in enumerate(x.shape)])
    return out


for _kind in ("sum", "mean", "max", "min", "prod"):
    _x = rand(2, 3, 4, low=0.5, high=1.5) if _kind == "prod" else randn(2, 3, 4)
    case(ReduceOp, f"{_kind}-dim1", [_x], _reduce, kind=_kind, dims=(1,), keepdim=False)
    case(ReduceOp, f"{_kind}-dims02-keep", [_x], _reduce, kind=_kind, dims=(0, 2), keepdim=True)
    case(ReduceOp, f"{_kind}-neg-dims", [_x], _reduce, kind=_kind, dims=(-1, -2), keepdim=False)
case(ReduceOp, "sum-all", [randn(2, 3)], _reduce, kind="sum", dims=(0, 1), keepdim=False)
case(ReduceOp, "max-i64", [randint(50, 3, 4)], _reduce, kind="max", dims=(1,), keepdim=False)


def _pool2d(x, kind, kernel, stride, padding):
    """Pooling as unfold; max pads with -inf, avg with zeros counted in the mean (torch's default)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fill = -math.inf if kind == "max" else 0.0
    xp = F.pad(x, (pw, pw, ph, ph), value=fill)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = xp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow]  # [n, c, oh, ow, kh, kw]
    cols = cols.reshape(n, c, oh, ow, kh * kw)
    return cols.amax(-1) if kind == "max" else cols.mean(-1)


for _kind, _k, _s, _p, _shape in [
    ("max", (2, 2), (2, 2), (0, 0), (2, 3, 8, 8)),
    ("max", (3, 3), (2, 2), (1, 1), (1, 2, 7, 9)),
    ("avg", (3, 3), (1, 1), (1, 1), (2, 2, 5, 5)),
    ("avg", (2, 3), (1, 2), (0, 1), (1, 3, 6, 7)),
]:
    case(
        Pool2dOp,
        f"{_kind}-k{_k[0]}{_k[1]}-s{_s[0]}{_s[1]}-p{_p[0]}{_p[1]}",
        [randn(*_shape)],
        _pool2d,
        kind=_kind,
        kernel=_k,
        stride=_s,
        padding=_p,
    )


# ---- mixture of experts --------------------------------------------------------------
def _topk(x, k, dim, largest):
    values, indices = torch.sort(x, dim, descending=largest)
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)


case(TopkOp, "largest-last-dim", [randn(4, 8)], _topk, k=3, dim=-1, largest=True)
case(TopkOp, "smallest-dim0", [randn(5, 4)], _topk, k=2, dim=0, largest=False)
case(TopkOp, "k-equals-size", [randn(2, 3, 4)], _topk, k=3, dim=1, largest=True)


def dispatch_loop(tokens, indices, num_experts, capacity):
    """GShard dispatch, spelled out: first choices of all tokens (in token order), then second."""
    t, k = indices.shape
    buffers = torch.zeros(num_experts, capacity, tokens.shape[1], dtype=tokens.dtype)
    slots = torch.full((t, k), -1, dtype=torch.int64)
    fill = [0] * num_experts
    for choice in range(k):
        for token in range(t):
            e = int(indices[token, choice])
            if fill[e] < capacity:
                slots[token, choice] = fill[e]
                buffers[e, fill[e]] = tokens[token]
                fill[e] += 1
    return buffers, slots


def combine_loop(buffers, indices, slots, weights):
    out = torch.zeros(indices.shape[0], buffers.shape[2], dtype=buffers.dtype)
    for token in range(indices.shape[0]):
        for choice in range(indices.shape[1]):
            s = int(slots[token, choice])
            if s >= 0:
                out[token] += weights[token, choice] * buffers[int(indices[token, choice]), s]
    return out


case(
    MoeDispatchOp,
    "top2-dropping",
    [randn(8, 4), randint(3, 8, 2)],
    dispatch_loop,
    num_experts=3,
    capacity=3,
)
case(
    MoeDispatchOp,
    "top1-roomy",
    [randn(5, 2), randint(4, 5, 1)],
    dispatch_loop,
    num_experts=4,
    capacity=5,
)
case(
    MoeDispatchOp,
    "i32-indices",
    [randn(6, 3), randint(2, 6, 2, dtype=torch.int32)],
    dispatch_loop,
    num_experts=2,
    capacity=4,
)
_disp_idx = randint(3, 8, 2)
_, _disp_slots = dispatch_loop(randn(8, 4), _disp_idx, 3, 3)
case(
    MoeCombineOp, "with-dropped", [randn(3, 3, 4), _disp_idx, _disp_slots, rand(8, 2)], combine_loop
)
case(
    MoeCombineOp,
    "i32-indices",
    [randn(3, 3, 4), _disp_idx.int(), _disp_slots.int(), rand(8, 2)],
    combine_loop,
)
case(
    MoeCombineOp,
    "top1",
    [randn(2, 4, 3), randint(2, 5, 1), randint(4, 5, 1), rand(5, 1)],
    combine_loop,
)

# Ops with no operands, tested by hand in test_ops.py.
SOURCE_OP_NAMES = frozenset({"kiln.param", "kiln.constant"})


# ---- quantization (every format's numerics: tests/ir/test_quant_*.py) --------------------
def _int8_quantize(x, format, axis, scale):
    s = torch.tensor(scale, dtype=torch.float32)
    return (x / s).round().clamp(-127, 127).to(torch.int8), s.reshape(1, 1)


case(QuantizeOp, "int8-static-scale", [randn(4, 8)], _int8_quantize, format="int8_tensor", axis=1, scale=0.02)
case(DequantizeOp, "int8-per-tensor", [(randint(255, 4, 8) - 127).to(torch.int8), torch.full((1, 1), 0.02)],
     lambda codes, scales, **_: codes.float() * scales, format="int8_tensor", axis=1)
