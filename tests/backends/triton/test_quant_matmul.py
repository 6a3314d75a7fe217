"""Matmuls that dequantize packed weights in the kernel (backends/triton/dequant.py,
dequant_fusion.py, matmul.py) against the interpreter's exact emulation.

The kernel's weights equal the emulation's bit for bit (decode and scale in float32), so
the outputs differ only by the order of fp32 accumulation: 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, compile_triton, source
from xdsl.dialects.builtin import DictionaryAttr, StringAttr

import ir
from backends.triton.aot import CudaTarget, compile_module
from backends.triton.backend import TritonBackend
from backends.triton.knobs import KnobError, MatmulKnobs, check_group_block_k
from compiler import compile_model
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from compiler.commands.compile_cmd import quant_line
from examples.zoo import ZOO
from ir.ops.contraction import LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, UNARY_OPS
from ir.ops.quant import DequantizeOp
from ir.quant import get_format, to_rows
from passes import run_pipeline
from passes.quant_apply import materialize
from passes.quant_layers import find_layers

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FORMATS = ["int8", "int4_g32", "int4_g64", "int4_g128", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3",
           "mxfp4", "mxint8", "fp8_e4m3", "int8_tensor", "bfp4", "bf16", "fp16", "fixed<12,4,AP_RND_CONV,AP_SAT>"]
# 16-wide tiles (several tiles per dim, ragged edges) and BLOCK_K that divides every group
TILES16 = {"matmul": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}}
# BLOCK_K a multiple of 32-element groups: several scales per column per K block
TILES64 = {"matmul": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 2}}


def packed(b, name: str, w: torch.Tensor, fmt_name: str, axis: int):
    """`w` stored as `materialize` stores it: packed codes and scales params + a dequantize."""
    fmt = get_format(fmt_name)
    q = fmt.quantize(to_rows(w, axis))
    codes = b.param(f"{name}.qcodes", fmt.pack(q).view(torch.int8))
    scales = None
    if q.scales is not None:
        s = q.scales.view(torch.int8) if q.scales.dtype == torch.uint8 else q.scales
        scales = b.param(f"{name}.qscales", s.contiguous())
    return b.op(DequantizeOp, codes, scales, format=fmt_name, axis=axis, shape=tuple(w.shape))


def weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.1
    w[:, 3] *= 40.0  # an outlier channel, so group and block scales differ
    w[1, :33] = 0.0  # an all-zero group / MX block (E8M0 byte 0)
    return w


def run_check(program, inputs, overrides, tol: float = 1e-5):
    kernel = compile_triton(program, overrides)
    expected = ir.run(program, *inputs)
    got = kernel(*inputs)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=tol, rtol=tol)
    return kernel


def linear_program(fmt: str, x: torch.Tensor, n: int = 24):
    k = x.shape[-1]
    w, bias = weight(n, k), torch.randn(n)

    def body(b):
        y = b.op(LinearOp, b.args[0], packed(b, "w", w, fmt, 1), b.param("b", bias), group=1)
        return [b.op(UNARY_OPS["gelu"], y, group=1)]

    return build([x], body)


@pytest.mark.parametrize("overrides", [TILES16, TILES64], ids=["bk16", "bk64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_linear_with_a_packed_weight_matches_the_emulation(fmt, overrides):
    x = torch.randn(2, 5, 80)  # K = 80: a ragged last group for every group size
    kernel = run_check(linear_program(fmt, x), [x], overrides)
    assert kernel.fallback_ops == [] and kernel.num_kernels == 1
    assert kernel.quant_paths == {"w": f"fused-matmul g1_matmul, {fmt}"}


def test_int4_source_unpacks_nibbles_in_the_k_loop_and_has_no_dequantize_kernel():
    x = torch.randn(5, 80)
    text = source(compile_triton(linear_program("int4_g32", x), TILES16))
    assert text.count("@triton.jit") == 1  # CHECK-COUNT-1: @triton.jit
    loop = text[text.index("for k0 in range(0, 80, BLOCK_K):"):text.index("acc = tl.dot(")]
    assert "# w: int4_g32 codes decoded in the K loop" in text
    # CHECK: byte index i >> 1, nibble (byte >> ((i & 1) * 4)) & 15, sign extension
    assert " >> 1\n" in loop and ".to(tl.int32) >> ((" in loop and " & 1) * 4)) & 15" in loop
    assert "^ 8) - 8)" in loop
    # CHECK: BLOCK_K=16 divides the group: one f16 scale per column per K block
    assert "rn[None, :] * 3 + (k0 // 32)" in loop and ".to(tl.float32)" in loop
    assert "fallbacks[" not in text and "_pointwise" not in text


def test_mx_source_decodes_e2m1_and_the_e8m0_block_scale():
    x = torch.randn(5, 80)
    text = source(compile_triton(linear_program("mxfp4", x), TILES64))
    loop = text[text.index("for k0 in"):text.index("acc = tl.dot(")]
    assert "<< 23).to(tl.float32, bitcast=True)" in loop  # E8M0 2^(e-127) and the E2M1 pattern
    assert "(rk[:, None] // 32)" in loop  # BLOCK_K=64: two blocks' scales per column
    assert "_pointwise" not in text


def test_matmul_op_with_a_packed_k_by_n_weight():
    """`kiln.matmul(x, W)` with W [K, N] quantized along K (axis 0): rows of the view are W's columns."""
    x, w = torch.randn(7, 70), weight(20, 70).T.contiguous()

    def body(b):
        return [b.op(MatmulOp, b.args[0], packed(b, "w", w, "int4_g64", 0), group=0)]

    kernel = run_check(build([x], body), [x], TILES16)
    assert kernel.num_kernels == 1 and kernel.quant_paths["w"].startswith("fused-matmul")


def test_weight_shared_by_two_matmuls_is_decoded_in_both():
    x = torch.randn(6, 64)
    w = weight(16, 64)

    def body(b):
        d = packed(b, "w", w, "mxint8", 1)
        y1 = b.op(LinearOp, b.args[0], d, group=1)
        y2 = b.op(LinearOp, b.op(UNARY_OPS["relu"], b.args[0], group=2), d, group=3)
        return [b.op(BINARY_OPS["add"], y1, y2, group=4)]

    kernel = run_check(build([x], body), [x], TILES16)
    assert kernel.quant_paths["w"].count("fused-matmul") == 2
    assert "_pointwise" in source(kernel) and "fallbacks[" not in source(kernel)


def test_dequantize_outside_a_matmul_is_a_decode_kernel():
    x = torch.randn(24, 80)
    w = weight(24, 80)
    program = build([x], lambda b: [b.op(BINARY_OPS["add"], packed(b, "w", w, "mxfp6_e3m2", 1), b.args[0])])
    kernel = run_check(program, [x], None, tol=0)
    assert kernel.quant_paths["w"].startswith("dequant-kernel")


def test_block_k_must_fit_the_group_size():
    check_group_block_k(MatmulKnobs(BLOCK_K=16), 32)
    check_group_block_k(MatmulKnobs(BLOCK_K=128), 32)
    check_group_block_k(MatmulKnobs(BLOCK_K=64), 0)  # per channel: anything goes
    with pytest.raises(KnobError, match="BLOCK_K=64 neither divides nor is a multiple"):
        check_group_block_k(MatmulKnobs(BLOCK_K=64), 48)


# ---- the zoo, weight-only, through `materialize` and the Triton pipeline -------------------
ZOO_FORMATS = ("int8", "int4_g32", "int4_g64", "int4_g128", "mxfp8_e4m3", "mxfp4", "mxint8")


def quantized_zoo(name: str):
    """The zoo model captured, its layers' formats assigned round-robin from ZOO_FORMATS (so
    every format occurs, which the ILP would not promise), materialized as `quantize` does."""
    model, inputs = ZOO[name]()
    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    program = convert_nodes(part, plan.consts, users_outside(part)).program
    layers, _ = find_layers(program.forward)
    for i, layer in enumerate(layers):
        fmt = StringAttr(ZOO_FORMATS[i % len(ZOO_FORMATS)])
        for op in layer.users:
            op.attributes["quant"] = DictionaryAttr({"format": fmt, "storage": fmt})
    assert materialize(program, layers) == len(layers)
    # The Triton pipeline with greedy fusion: the same kind of groups as the ILP's (the
    # dequantize stays alone either way), without seconds of solver time on gpt.
    run_pipeline(program.module, TritonBackend().pipeline().replace("fuse{", "fuse{solver=greedy "))
    return program, inputs, len(layers)


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_zoo_weight_only_every_layer_decodes_in_its_matmul(name):
    program, inputs, n_layers = quantized_zoo(name)
    kernel = compile_triton(program)
    expected = ir.run(program, *inputs)  # the exact emulation of the packed weights
    torch.testing.assert_close(kernel(*inputs)[0], expected[0], atol=1e-5, rtol=1e-5)
    assert len(kernel.quant_paths) == n_layers
    assert all(p.startswith("fused-matmul") for p in kernel.quant_paths.values())
    assert "kiln.dequantize" not in kernel.fallback_ops
    used = {p.split(", ")[-1] for p in kernel.quant_paths.values()}
    assert used == set(ZOO_FORMATS[:n_layers])


def test_compile_report_lists_the_dequant_fused_layers():
    """`kiln compile --target triton` with `quantize` in the pipeline: the report says which
    layers' matmuls decode their weights in-kernel."""
    model, inputs = ZOO["mlp"]()
    pipeline = "quantize{formats=int8,int4_g64,mxfp4 avg-bits=6},fuse{hardware=a100 fuse-contractions=true}"
    compiled = compile_model(model, inputs, target="triton", pipeline=pipeline, use_cache=False)
    paths = compiled.report["quant_paths"]
    assert set(paths) == {f"p_layers_{i}_weight" for i in range(4)}
    assert compiled.report["partitions"][0]["quant_paths"] == paths
    line = quant_line(paths)
    assert line.startswith("4/4 weights dequantized inside their matmul kernel: p_layers_0_weight (g")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=0.05, rtol=0.05)


def test_a_dequantizing_matmul_compiles_ahead_of_time_for_sm80(tmp_path):
    x = torch.randn(5, 96)

    def body(b):
        h = b.op(LinearOp, b.args[0], packed(b, "w0", weight(64, 96), "int4_g32", 1), group=0)
        return [b.op(LinearOp, h, packed(b, "w1", weight(32, 64), "mxfp4", 1), group=1)]

    gpu = {"matmul": {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 32, "input_precision": "tf32"}}
    kernel = compile_triton(build([x], body), gpu, out_dir=tmp_path)
    result = compile_module(kernel.generated, tmp_path / "kernels.py", CudaTarget(80))
    assert set(result) == {"g0_matmul", "g1_matmul"}
    for stages in result.values():
        assert ".target sm_80" in stages["ptx"] and "mma" in stages["ptx"]  # tf32 tensor cores
        assert "shr." in stages["ptx"]  # the unpacking shifts survive into the GPU code
