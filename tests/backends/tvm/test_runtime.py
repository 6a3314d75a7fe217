"""The TVM runtime layer: library calls, CPU schedules, build/cache/run, against eager torch.

Each test builds a small hand-written Relax module with ``relax.BlockBuilder`` (no Kiln IR
involved), runs it on the Relax VM through ``Runner`` and compares with torch in fp32.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
import tvm  # a required dependency: a broken TVM fails these tests instead of skipping them
from tvm import relax
from tvm.relax import op as O

from backends.tvm import library as L
from backends.tvm.build import RelaxBuildOptions, Runner, build, build_cached, relax_pipeline
from backends.tvm.schedule import SCHEDULE_ATTR
from backends.tvm.target import (
    ThreadConfig,
    configure_threads,
    cpu_target,
    default_thread_config,
    host_cpu,
    vector_bits,
    vector_lanes,
)

TOL = {"atol": 1e-4, "rtol": 1e-4}


def _module(fn, *types):
    """A module whose ``main`` takes tensors of ``types`` and returns ``fn(bb, *vars)``."""
    bb = relax.BlockBuilder()
    params = [
        relax.Var(f"a{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(types)
    ]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(fn(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def f32(*shape):
    return (shape, "float32")


def _run(fn, args, *types, options=None):
    types = types or tuple(f32(*a.shape) for a in args)
    runner = Runner(build(_module(fn, *types), options))
    return runner(*args)


def _rules(mod) -> list[str]:
    lowered = relax_pipeline()(mod)
    return sorted(
        str(f.attrs[SCHEDULE_ATTR])
        for _, f in lowered.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and SCHEDULE_ATTR in f.attrs
    )


def test_target_names_the_host_cpu():
    target = cpu_target()
    assert str(target.attrs["mcpu"]) == host_cpu()
    assert vector_lanes(target, 32) >= 4
    assert "fast-math-reassoc" not in cpu_target(fast_math=False).attrs


def test_vector_width_comes_from_the_isa_not_llvms_preferred_width():
    # LLVM's answer is 512 for every x86 CPU; AVX2 hosts must get 256-bit kernels.
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == 256
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "znver1"})) == 256
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})) == 512
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})) == 128


def test_default_pools_are_as_wide_as_the_cores():
    # Both pools as wide as the cores; which one a program uses is thread_policy's rule.
    assert default_thread_config(2) == ThreadConfig(num_threads=2, torch_threads=2)


def test_configure_threads_sizes_both_pools():
    config = configure_threads(ThreadConfig(num_threads=2))
    assert torch.get_num_threads() == (config.torch_threads or config.num_threads)
    assert os.environ["TVM_NUM_THREADS"] == str(config.num_threads)


def test_linear_bias_gelu():
    x, w, b = torch.randn(8, 64, 256), torch.randn(512, 256) * 0.05, torch.randn(512)
    out = _run(lambda bb, x, w, b: bb.emit(O.nn.gelu(L.emit_linear(bb, x, w, b))), [x, w, b])
    torch.testing.assert_close(out, F.gelu(F.linear(x, w, b)), **TOL)


def test_linear_nobias_silu_and_matmul():
    x, w = torch.randn(4, 32, 64), torch.randn(96, 64) * 0.1
    out = _run(lambda bb, x, w: bb.emit(O.nn.silu(L.emit_linear(bb, x, w))), [x, w])
    torch.testing.assert_close(out, F.silu(F.linear(x, w)), **TOL)
    a, b = torch.randn(2, 4, 16, 32), torch.randn(2, 4, 32, 8)
    torch.testing.assert_close(_run(L.emit_matmul, [a, b]), a @ b, **TOL)


@pytest.mark.parametrize("shape", [(8, 64, 256), (5, 37)])
def test_layer_norm_and_rms_norm(shape):
    d = shape[-1]
    x, g, b = torch.randn(*shape), torch.randn(d), torch.randn(d)
    ln = _run(lambda bb, x, g, b: bb.emit(O.nn.layer_norm(x, g, b, axes=[-1])), [x, g, b])
    torch.testing.assert_close(ln, F.layer_norm(x, (d,), g, b), **TOL)
    rms = _run(lambda bb, x, g: bb.emit(O.nn.rms_norm(x, g, axes=[-1], epsilon=1e-6)), [x, g])
    torch.testing.assert_close(rms, F.rms_norm(x, (d,), g, eps=1e-6), **TOL)


@pytest.mark.parametrize("shape", [(8, 4, 64, 64), (3, 7, 50)])
def test_softmax(shape):
    x = torch.randn(*shape) * 4
    torch.testing.assert_close(
        _run(lambda bb, x: bb.emit(O.nn.softmax(x, -1)), [x]), x.softmax(-1), **TOL
    )


def test_masked_softmax_keeps_minus_inf():
    x, keep = torch.randn(2, 4, 16, 16), torch.ones(16, 16, dtype=torch.bool).tril()
    minus_inf = relax.const(float("-inf"), "float32")
    out = _run(
        lambda bb, x, m: bb.emit(O.nn.softmax(O.where(m, x, minus_inf), -1)),
        [x, keep],
        f32(2, 4, 16, 16),
        ((16, 16), "bool"),
    )
    torch.testing.assert_close(out, x.masked_fill(~keep, float("-inf")).softmax(-1), **TOL)


@pytest.mark.parametrize(
    "op,ref",
    [
        (O.exp, torch.exp),
        (O.erf, torch.erf),
        (O.tanh, torch.tanh),
        (O.sigmoid, torch.sigmoid),
        (O.nn.gelu, F.gelu),
        (lambda x: O.nn.gelu_tanh(x), lambda x: F.gelu(x, approximate="tanh")),
    ],
)
def test_fast_math_matches_torch(op, ref):
    x = torch.linspace(-12, 12, 4096).reshape(64, 64)
    out = _run(lambda bb, x: bb.emit(op(x)), [x])
    torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=1e-5)


def test_conv2d_relu_maxpool():
    x, w, b = torch.randn(2, 8, 16, 16), torch.randn(16, 8, 3, 3) * 0.1, torch.randn(16)

    def fn(bb, x, w, b):
        y = bb.emit(O.nn.relu(L.emit_conv2d(bb, x, w, b, stride=1, padding=1)))
        return bb.emit(O.nn.max_pool2d(y, pool_size=(2, 2), strides=(2, 2)))

    ref = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)
    torch.testing.assert_close(_run(fn, [x, w, b]), ref, **TOL)
    strided = _run(lambda bb, x, w: L.emit_conv2d(bb, x, w, stride=(2, 2), groups=2), [x, w[:, :4]])
    torch.testing.assert_close(strided, F.conv2d(x, w[:, :4], stride=2, groups=2), **TOL)


def test_sdpa_causal_and_masked():
    q, k, v = (torch.randn(2, 4, 32, 16) for _ in range(3))
    causal = _run(lambda bb, q, k, v: L.emit_sdpa(bb, q, k, v, causal=True), [q, k, v])
    torch.testing.assert_close(
        causal, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL
    )
    mask = torch.randn(32, 32)
    masked = _run(
        lambda bb, q, k, v, m: L.emit_sdpa(bb, q, k, v, mask=m, scale=0.3), [q, k, v, mask]
    )
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(masked, ref, **TOL)


def test_sdpa_bshd_and_packed_qkv():
    b, s, h, e = 2, 16, 4, 8
    q, k, v = (torch.randn(b, s, h, e) for _ in range(3))
    out = _run(lambda bb, q, k, v: L.emit_sdpa(bb, q, k, v, causal=True, layout="bshd"), [q, k, v])
    ref = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True)
    torch.testing.assert_close(out, ref.transpose(1, 2), **TOL)
    qkv = torch.randn(b, s, 3 * h * e)
    packed = _run(lambda bb, x: L.emit_sdpa_packed(bb, x, h, causal=True), [qkv])
    qh, kh, vh = qkv.view(b, s, 3, h, e).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(packed, ref.reshape(b, s, h * e), **TOL)


def test_embedding():
    table, ids = torch.randn(100, 32), torch.randint(0, 100, (4, 9))
    out = _run(
        lambda bb, ids, t: L.emit_embedding(bb, ids, t),
        [ids, table],
        ((4, 9), "int64"),
        f32(100, 32),
    )
    torch.testing.assert_close(out, F.embedding(ids, table), **TOL)


def test_data_movement_rope_style():
    x, c, s = torch.randn(2, 4, 16, 64), torch.randn(16, 64), torch.randn(16, 64)

    def fn(bb, x, c, s):
        lo = O.strided_slice(x, axes=[3], begin=[0], end=[32])
        hi = O.strided_slice(x, axes=[3], begin=[32], end=[64])
        rot = O.concat([O.negative(hi), lo], axis=-1)
        y = O.add(O.multiply(x, c), O.multiply(rot, s))
        return bb.emit(O.permute_dims(y, [0, 2, 1, 3]))

    ref = (x * c + torch.cat([-x[..., 32:], x[..., :32]], -1) * s).permute(0, 2, 1, 3)
    torch.testing.assert_close(_run(fn, [x, c, s]), ref, **TOL)


def test_reductions_mean_sum_and_pool():
    x = torch.randn(8, 64, 16, 16)
    torch.testing.assert_close(
        _run(lambda bb, x: bb.emit(O.mean(x, axis=[2, 3])), [x]), x.mean((2, 3)), **TOL
    )
    y = torch.randn(8, 64, 256)
    torch.testing.assert_close(
        _run(lambda bb, y: bb.emit(O.sum(y, axis=[1])), [y]), y.sum(1), **TOL
    )


def test_every_prim_func_gets_a_schedule():
    mod = _module(
        lambda bb, x, g, b: bb.emit(
            O.nn.softmax(O.nn.layer_norm(O.nn.gelu(O.add(x, g)), g, b, axes=[-1]), -1)
        ),
        f32(8, 64, 256),
        f32(256),
        f32(256),
    )
    rules = _rules(mod)
    assert rules and "none" not in rules, rules


def test_unschedulable_function_still_builds():
    # topk lowers to opaque sorting code that no rule handles: it must run unscheduled.
    x = torch.randn(64, 8)
    out = _run(lambda bb, x: bb.emit(O.topk(x, 2, axis=-1, ret_type="values")), [x])
    torch.testing.assert_close(out, x.topk(2, -1).values, **TOL)


def test_build_without_schedules_or_fast_math():
    x = torch.randn(4, 32)
    out = _run(
        lambda bb, x: bb.emit(O.nn.softmax(x, -1)),
        [x],
        options=RelaxBuildOptions(schedule=False, fast_math=False),
    )
    torch.testing.assert_close(out, x.softmax(-1), **TOL)


def test_export_and_load_round_trip(tmp_path):
    x, w, b = torch.randn(4, 16, 32), torch.randn(64, 32) * 0.1, torch.randn(64)
    mod = _module(
        lambda bb, x, w, b: bb.emit(O.nn.relu(L.emit_linear(bb, x, w, b))),
        f32(4, 16, 32),
        f32(64, 32),
        f32(64),
    )
    path = tmp_path / "cache" / "abc.so"
    first = Runner(build_cached(mod, path))
    assert path.exists()
    second = Runner(build_cached(mod, path))  # loads, does not rebuild
    ref = F.relu(F.linear(x, w, b))
    torch.testing.assert_close(first(x, w, b), ref, **TOL)
    torch.testing.assert_close(second(x, w, b), ref, **TOL)


def test_runner_returns_torch_tensors():
    x = torch.randn(16, 16)
    out = _run(lambda bb, x: bb.emit(O.add(x, x)), [x])
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, x + x)


# Ops whose legalized PrimFuncs exercise the fallback rules (opaque blocks, tuple reducers,
# strided reads, matmul-shaped reductions left in TIR): all must build and stay correct.
MISC = {
    "argmax": (lambda bb, x: bb.emit(O.argmax(x, axis=-1)), lambda x: x.argmax(-1), (512, 8)),
    "cumsum": (lambda bb, x: bb.emit(O.cumsum(x, axis=-1)), lambda x: x.cumsum(-1), (64, 64)),
    "tir_matmul": (
        lambda bb, x: bb.emit(O.matmul(x, O.permute_dims(x))),
        lambda x: x @ x.T,
        (64, 48),
    ),
    "transpose": (
        lambda bb, x: bb.emit(O.permute_dims(x, [0, 2, 1])),
        lambda x: x.transpose(1, 2),
        (8, 64, 96),
    ),
    "outer_sum": (
        lambda bb, x: bb.emit(
            O.sum(O.multiply(O.expand_dims(x, 1), O.expand_dims(x, 2)), axis=[3])
        ),
        lambda x: (x[:, None] * x[:, :, None]).sum(3),
        (8, 16, 32),
    ),
    "max_mid": (lambda bb, x: bb.emit(O.max(x, axis=[1])), lambda x: x.amax(1), (8, 64, 40)),
}


@pytest.mark.parametrize("name", sorted(MISC))
def test_misc_ops_build_and_match(name):
    fn, ref, shape = MISC[name]
    x = torch.randn(*shape)
    torch.testing.assert_close(_run(fn, [x]), ref(x), **TOL)
