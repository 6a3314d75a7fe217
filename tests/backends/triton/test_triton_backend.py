"""The Triton backend as a whole (backends/triton/backend.py, codegen.py, groups.py, knobs.py):
the protocol, fallbacks and splits, artifacts, knobs."""

from __future__ import annotations

import os

import pytest
import torch
from triton_builders import build, check, compile_triton, source

from backends import BackendError, get_backend
from backends.triton.backend import TritonBackend
from backends.triton.knobs import FAMILIES, KnobError, MatmulKnobs, default_knobs
from ir.ops.contraction import Conv2dOp, LinearOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.normalization import BatchNormOp
from passes import parse_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _conv_bn_relu(b, w, stats, group=None):
    c = b.op(
        Conv2dOp,
        b.args[0],
        b.param("w", w),
        stride=(1, 1),
        padding=(1, 1),
        dilation=(1, 1),
        groups=1,
        group=group,
    )
    bn = b.op(
        BatchNormOp, c, *[b.param(f"s{i}", t) for i, t in enumerate(stats)], eps=1e-5, group=group
    )
    return b.op(UNARY_OPS["relu"], bn, group=group)


def test_registered_as_a_target_with_capabilities_and_a_pipeline():
    backend = get_backend("triton")
    assert isinstance(backend, TritonBackend) and backend.name == "triton"
    caps = backend.capabilities()
    assert {"kiln.linear", "kiln.attention", "kiln.softmax", "kiln.add"} <= caps.ops
    assert "kiln.conv2d" not in caps.ops
    assert caps.fusible == {"pointwise", "reduction", "matmul", "attention", "dequantize-prologue"}
    parse_pipeline(backend.pipeline())  # every pass and option in it exists


def test_runs_in_the_interpreter_without_a_gpu():
    x = torch.randn(4)
    compile_triton(build([x], lambda b: [b.op(UNARY_OPS["exp"], b.args[0])]))
    if not torch.cuda.is_available():
        assert os.environ["TRITON_INTERPRET"] == "1"


def test_unsupported_op_falls_back_per_op_and_is_reported():
    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3)
    stats = [torch.randn(4), torch.rand(4) + 0.5, torch.randn(4), torch.randn(4)]
    kernel = check(build([x], lambda b: [_conv_bn_relu(b, w, stats)]), [x])
    assert kernel.fallback_ops == ["kiln.conv2d"]
    assert kernel.num_kernels == 3  # conv2d through torch, then batch_norm and relu kernels
    assert "fallbacks[0](" in source(kernel) and "# kiln.conv2d" in source(kernel)


def test_group_with_an_unsupported_op_keeps_the_rest_fused():
    """conv2d + batch_norm + relu in one group: conv2d falls back, batch_norm + relu stay one kernel."""
    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3)
    stats = [torch.randn(4), torch.rand(4) + 0.5, torch.randn(4), torch.randn(4)]
    kernel = check(build([x], lambda b: [_conv_bn_relu(b, w, stats, group=0)]), [x])
    assert kernel.fallback_ops == ["kiln.conv2d"]
    assert source(kernel).count("@triton.jit") == 1 and kernel.num_kernels == 2
    assert "group g0 (kiln.conv2d, kiln.batch_norm, kiln.relu) split" in kernel.notes[0]


def test_one_kernel_per_group_in_dependency_order():
    x, w = torch.randn(6, 10), torch.randn(12, 10)

    def body(b):
        h = b.op(LinearOp, b.args[0], b.param("w", w), group=0)
        h = b.op(UNARY_OPS["relu"], h, group=0)
        y = b.op(UNARY_OPS["exp"], b.args[0], group=1)  # independent of group 0
        s = b.op(BINARY_OPS["add"], h, b.const(torch.tensor(1.0)), group=2)
        return [s, y]

    kernel = check(build([x], body), [x])
    text = source(kernel)
    assert text.count("@triton.jit") == kernel.generated.num_groups == 3
    assert text.index("g0_matmul[") < text.index("g2_pointwise[")


def test_groups_that_depend_on_each_other_in_a_cycle_are_an_error():
    x = torch.randn(4)

    def body(b):
        a = b.op(UNARY_OPS["exp"], b.args[0], group=0)
        m = b.op(UNARY_OPS["neg"], a, group=1)
        return [b.op(BINARY_OPS["add"], a, m, group=0)]

    with pytest.raises(BackendError, match="cycle"):
        compile_triton(build([x], body))


def test_out_dir_gets_the_generated_module_and_cache_dir_hits(tmp_path):
    x = torch.randn(5, 7)
    program = build([x], lambda b: [b.op(UNARY_OPS["silu"], b.args[0], group=0)])
    first = compile_triton(program, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    written = (tmp_path / "out" / "kernels.py").read_text()
    assert (
        written == source(first) and first.artifacts["kernels"] == tmp_path / "out" / "kernels.py"
    )
    assert "def call(args, bound, fallbacks):" in written
    assert not first.cache_hit
    second = compile_triton(program, cache_dir=tmp_path / "cache")
    assert second.cache_hit
    torch.testing.assert_close(second(x)[0], torch.nn.functional.silu(x))


def test_parameters_and_arguments_can_be_returned_directly():
    x, w = torch.randn(3), torch.randn(3)

    def body(b):
        p = b.param("w", w)
        return [b.args[0], p, b.op(BINARY_OPS["mul"], b.args[0], p)]

    check(build([x], body), [x])


def test_knobs_declare_ranges_and_defaults_fit_the_problem():
    with pytest.raises(KnobError, match="BLOCK_M=48"):
        MatmulKnobs(BLOCK_M=48)
    sizes = {"numel": 5, "N": 3, "R": 7, "M": 3, "K": 5, "L": 1, "S": 3}
    for interpret in (True, False):
        for family in FAMILIES:
            knobs = default_knobs(family, sizes, interpret)  # validated on construction
            assert set(knobs.launch()) == {"num_warps", "num_stages"}
    gpu = default_knobs("matmul", {"M": 4096, "N": 4096, "K": 4096}, interpret=False)
    assert (gpu.BLOCK_M, gpu.BLOCK_N, gpu.BLOCK_K) == (64, 64, 32)
    assert MatmulKnobs().constexprs() == {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}
