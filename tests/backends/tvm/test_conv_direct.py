"""The direct convolution kernels (`backends/tvm/conv_direct.py`): numbers against
torch.conv2d on odd shapes, and the compiled program: the kernel is the one called, its
weight is bound packed, and the policy knob sends convolutions back to the library.
"""

from __future__ import annotations

import pytest
import torch
import tvm  # a required dependency: a broken TVM fails these tests instead of skipping them
from torch import nn

from backends.tvm.conv_direct import (
    ConvOptions,
    ConvShape,
    channel_block,
    conv_direct_func,
    pack_weight,
    pixel_tile,
    pointwise_rows,
    row_vectors,
    use_direct,
)
from backends.tvm.target import cpu_target, host_lanes
from compiler import compile_model

TOL = {"atol": 1e-4, "rtol": 1e-4}

# (N, Ci, H, W, Co, KH, KW, stride, padding, dilation, groups): output channels that are no
# multiple of the vector (12, 3, 1), output planes in no whole number of tiles (7x7, 5x9),
# strides, dilation, asymmetric padding, grouped, 1x1 on a 1x1 map, odd input channels.
GENERAL = [
    (2, 3, 17, 17, 16, 3, 3, (2, 2), (1, 1), (1, 1), 1),
    (1, 8, 7, 7, 12, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    (2, 5, 9, 13, 3, 3, 3, (1, 2), (0, 1), (1, 1), 1),
    (1, 16, 11, 11, 32, 3, 3, (1, 1), (2, 2), (2, 2), 1),
    (2, 32, 8, 8, 32, 3, 3, (2, 2), (1, 1), (1, 1), 4),
    (2, 96, 1, 1, 24, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    (1, 7, 6, 6, 1, 2, 2, (1, 1), (0, 0), (1, 1), 1),
    (2, 64, 10, 10, 64, 3, 3, (1, 1), (1, 1), (1, 1), 2),
    (1, 4, 1, 13, 16, 1, 3, (1, 1), (0, 1), (1, 1), 1),
    (1, 8, 28, 28, 64, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (1, 8, 9, 9, 16, 3, 3, (1, 1), (1, 1), (1, 1), 8),  # depthwise with a channel multiplier of 2
    # 1x1 convolutions the pixel-vector kernel takes (`pointwise_rows`): a row of 16 or 32
    # pixels, 4 rows of 4, output channels of 48, 12 and 20 (channel blocks 16, 4, 4)
    (1, 8, 16, 16, 48, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    (2, 5, 4, 4, 12, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    (1, 3, 2, 32, 20, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    # stride-1 convolutions with taps the pixel-vector kernel takes (`row_vectors`): a
    # 3-channel stem, 12 and 1 output channels, dilation 2 with a 3x5 kernel, asymmetric
    # padding (rows 0, columns 1)
    (2, 3, 32, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (1, 5, 16, 16, 12, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 20, 36, 1, 3, 5, (1, 1), (2, 2), (2, 2), 1),
    (1, 7, 6, 16, 20, 3, 3, (1, 1), (0, 1), (1, 1), 1),
]
# Depthwise: stride 1 and 2, 5x5, a row wider than four vectors (no vectorized row), padding.
DEPTHWISE = [
    (2, 16, 16, 16, 3, (1, 1), (1, 1)),
    (1, 48, 17, 17, 3, (2, 2), (0, 0)),
    (2, 24, 11, 11, 5, (2, 2), (2, 2)),
    (1, 8, 5, 70, 3, (1, 1), (1, 1)),
]
DILATED_DEPTHWISE = ConvShape(1, 12, 13, 13, 12, 3, 3, (1, 1), (2, 2), (2, 2), 12)


def _run(shape: ConvShape, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lanes = host_lanes()
    func = conv_direct_func(shape, bias, lanes, threads=2)
    kernel = tvm.tirx.build(func, target=cpu_target())["main"]
    torch.manual_seed(0)
    x = torch.randn(shape.n, shape.ci, shape.h, shape.w)
    w = torch.randn(shape.co, shape.ci // shape.groups, shape.kh, shape.kw)
    b = torch.randn(shape.co) if bias else None
    cb = 1 if shape.depthwise else channel_block(shape.co // shape.groups, lanes)
    out = torch.full((shape.n, shape.co, *shape.out_hw), float("nan"))
    kernel(x, pack_weight(w, shape, cb), *([b] if bias else []), out)
    ref = torch.conv2d(x, w, b, shape.stride, shape.padding, shape.dilation, shape.groups)
    return out, ref


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dims", GENERAL, ids=str)
def test_general_kernel_matches_torch(dims, bias):
    shape = ConvShape(*dims)
    assert not shape.depthwise
    out, ref = _run(shape, bias)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dims", DEPTHWISE, ids=str)
def test_depthwise_kernel_matches_torch(dims, bias):
    n, c, h, w, k, stride, padding = dims
    shape = ConvShape(n, c, h, w, c, k, k, stride, padding, (1, 1), c)
    assert shape.depthwise
    out, ref = _run(shape, bias)
    torch.testing.assert_close(out, ref, **TOL)


def test_pointwise_kernel_takes_plain_1x1_convolutions_only():
    def shape(h, w, k=1, stride=1, pad=0, groups=1):
        return ConvShape(1, 8, h, w, 16, k, k, (stride, stride), (pad, pad), (1, 1), groups)

    assert pointwise_rows(shape(16, 16), 16) and pointwise_rows(shape(4, 4), 16) and pointwise_rows(shape(8, 8), 8)
    assert not pointwise_rows(shape(3, 3), 16)  # 9 pixels: no whole vector
    assert not pointwise_rows(shape(16, 16, k=3, pad=1), 16) and not pointwise_rows(shape(16, 16, stride=2), 16)
    assert not pointwise_rows(shape(16, 16, groups=2), 16)
    func = conv_direct_func(shape(16, 16), bias=True, lanes=16)
    assert func.attrs["kiln.schedule_rule"] == "conv_pointwise"


def test_row_kernel_takes_stride_one_convolutions_with_whole_vectors_per_row():
    def shape(w, k=3, stride=1, groups=1):
        return ConvShape(1, 8, 8, w, 16, k, k, (stride, stride), (1, 1), (1, 1), groups)

    assert row_vectors(shape(32), 16) and row_vectors(shape(16), 16) and row_vectors(shape(8), 8)
    assert not row_vectors(shape(12), 16)  # a vector would straddle two output rows
    assert not row_vectors(shape(32, stride=2), 16) and not row_vectors(shape(32, groups=2), 16)
    assert not row_vectors(shape(32, k=1), 16)  # 1x1: `pointwise_rows`
    assert conv_direct_func(shape(32), bias=True, lanes=16).attrs["kiln.schedule_rule"] == "conv_rows"


def test_dilated_depthwise_matches_torch():
    out, ref = _run(DILATED_DEPTHWISE, bias=True)
    torch.testing.assert_close(out, ref, **TOL)


def test_tiles_fit_the_registers_and_prefer_whole_planes():
    assert channel_block(48, 16) == 16 and channel_block(12, 16) == 4 and channel_block(3, 16) == 1
    assert channel_block(64, 16) == 32 and channel_block(64, 8) == 16
    assert pixel_tile(16, 16, (16, 16)) == 8  # tiles divide a row...
    assert pixel_tile(16, 16, (28, 28)) == 7 and pixel_tile(16, 16, (7, 7)) == 7
    assert pixel_tile(16, 16, (2, 2)) == 4 and pixel_tile(16, 16, (4, 3)) == 12  # ...or hold rows
    assert pixel_tile(16, 16, (1, 97)) == 1  # a prime width: narrow tiles, still correct
    assert pixel_tile(32, 16, (40, 40)) * 2 <= 24 and pixel_tile(16, 8, (40, 40)) * 2 <= 12


def test_rule_keeps_large_convolutions_on_the_library():
    small = ConvShape(2, 16, 16, 16, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    medium = ConvShape(2, 16, 32, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1)  # 9.4M MACs
    large = ConvShape(8, 32, 32, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1)  # 75M MACs
    options = ConvOptions(threads=1)
    assert use_direct(small, options, 16) and not use_direct(medium, options, 16)
    assert use_direct(medium, ConvOptions(threads=2), 16)  # a parallel kernel keeps up longer
    assert not use_direct(large, ConvOptions(threads=2), 16)
    assert not use_direct(small, options, 4)  # narrower than AVX2: the library
    assert use_direct(large, ConvOptions(policy="direct"), 16)
    assert not use_direct(small, ConvOptions(policy="library"), 16)
    with pytest.raises(ValueError, match="conv: unknown policy 'fast'"):
        ConvOptions(policy="fast")


class _ConvNet(nn.Module):
    """Stem, depthwise-separable block, grouped conv, a shared weight used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1, bias=False)
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(self.pw(self.dw(h)))
        return self.grouped(h) + self.grouped(h * 0.5)


def _direct_and_library(model: nn.Module, x: torch.Tensor):
    """`model` compiled with the direct kernels (the default rule) and with every convolution
    on the library, both checked against eager."""
    with torch.no_grad():
        ref = model(x)
    direct = compile_model(model, (x,), target="tvm", use_cache=False)
    library = compile_model(model, (x,), target="tvm", use_cache=False, extra={"conv": "library"})
    torch.testing.assert_close(direct(x), ref, **TOL)
    torch.testing.assert_close(library(x), ref, **TOL)
    return direct, library


def test_compiled_model_runs_direct_kernels_and_library_policy_does_not():
    torch.manual_seed(0)
    direct, library = _direct_and_library(_ConvNet().eval(), torch.randn(2, 3, 19, 19))
    paths = direct.report["dense_paths"]
    assert len(paths) == 4 and all(p.startswith("direct conv") for p in paths.values()), paths
    assert any("depthwise" in p for p in paths.values())
    assert all(p.startswith("library") for p in library.report["dense_paths"].values())


class _ConvBN(nn.Module):
    """conv+bn+relu6; conv+bn+shortcut add (absorbed: the shortcut exists first); a conv whose
    batch norm output is read twice (not absorbed past the batch norm); conv+bn+add+relu
    whose shortcut convolution runs after it (the add stays a kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.c4, self.b4, self.short = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)
        for bn in (self.b1, self.b2, self.b3, self.b4):  # running statistics, not the identity
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        h = nn.functional.relu6(self.b1(self.c1(x)))
        h = self.b2(self.c2(h)) + x
        g = self.b3(self.c3(h))
        g = torch.relu(g) * g
        return torch.relu(self.b4(self.c4(g)) + self.short(g))


def test_batch_norm_and_activation_fold_into_the_convolution():
    torch.manual_seed(0)
    folded, library = _direct_and_library(_ConvBN().eval(), torch.randn(2, 8, 9, 9))
    paths = sorted(folded.report["dense_paths"].values())
    assert sum("+ batch_norm+clamp:" in p for p in paths) == 1, paths  # relu6 is a clamp
    assert sum("+ batch_norm+add:" in p for p in paths) == 1, paths
    assert sum("+ batch_norm:" in p for p in paths) == 2, paths  # the shared output, the late shortcut
    assert sum(p.startswith("direct conv:") for p in paths) == 1, paths  # the shortcut conv
    assert folded.report["num_kernels"] < library.report["num_kernels"]


def test_conv1d_weights_reshaped_from_parameters_take_the_direct_kernel():
    """Whisper's and Wav2Vec2's conv1d are captured as conv2d of height 1 on a reshaped weight."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 16, 3, padding=1), nn.GELU(), nn.Conv1d(16, 8, 10, stride=5)).eval()
    x = torch.randn(2, 4, 61)
    with torch.no_grad():
        ref = model(x)
    compiled = compile_model(model, (x,), target="tvm", use_cache=False)
    torch.testing.assert_close(compiled(x), ref, **TOL)
    paths = compiled.report["dense_paths"]
    assert len(paths) == 2 and all(p.startswith("direct conv") for p in paths.values()), paths


def test_silu_and_bias_only_activations_run_in_the_write_back():
    """EfficientNet: conv+bn+silu; its squeeze-excite: conv (bias, no batch norm) + silu."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.SiLU(),
                          nn.Conv2d(8, 8, 1), nn.SiLU(), nn.Conv2d(8, 4, 1), nn.ReLU()).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 6, 8, 8) * 4  # SiLU's both tails
    with torch.no_grad():
        ref = model(x)
    compiled = compile_model(model, (x,), target="tvm", use_cache=False)
    torch.testing.assert_close(compiled(x), ref, **TOL)
    paths = sorted(compiled.report["dense_paths"].values())
    assert [p.split(":")[0] for p in paths] == ["direct conv + batch_norm+silu", "direct conv + relu",
                                                "direct conv + silu"], paths


def test_fast_exp_expression_matches_torch():
    from tvm import te

    from backends.tvm.fast_expr import fast_exp

    n = 20000
    x = te.placeholder((n,), "float32", name="x")
    e = te.compute((n,), lambda i: fast_exp(x[i]), name="e")
    kernel = tvm.tirx.build(te.create_prim_func([x, e]), target=cpu_target())["main"]
    xs, out = torch.linspace(-87, 88, n), torch.empty(n)
    kernel(xs, out)
    ref = torch.exp(xs.double())
    assert ((out.double() - ref).abs() / ref).max() < 1e-6


def test_warm_reload_refolds_the_batch_norms_of_the_callers_weights(tmp_path):
    """The compile cache stores how folded weights are made (no IR inside), and a hit folds
    the new model's own batch norms."""
    torch.manual_seed(0)
    first, second = _ConvBN().eval(), _ConvBN().eval()
    x = torch.randn(2, 8, 9, 9)
    a = compile_model(first, (x,), cache_dir=tmp_path)
    b = compile_model(second, (x,), cache_dir=tmp_path)
    assert (a.report["compile_cache"]["misses"], b.report["compile_cache"]["hits"]) == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(a(x), first(x), **TOL)
        torch.testing.assert_close(b(x), second(x), **TOL)
