"""Quantized models on the TVM backend: packed weights, dequantize fused into the matmul.

Three kinds of check, as for any backend: numbers (the TVM build against the interpreter,
which runs the quantized IR's exact emulation), the generated code (the fused kernel is
called, nothing fp32 of a weight's size exists: no constant, no parameter, and no buffer
once TVM has compacted the kernel's allocations) and the bytes bound at load time.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import tvm  # a required dependency: a broken TVM fails these tests instead of skipping them
from tvm import s_tir

from backends.base import BuildOptions
from backends.tvm.backend import TVMBackend
from backends.tvm.lower import lower_program
from backends.tvm.quant_decode import PackedLayout, unsupported_reason
from backends.tvm.quant_lower import DEQUANT_TIR, FUSED
from backends.tvm.quant_matmul import MatmulShape, dequantize_func, quant_matmul_func
from backends.tvm.target import cpu_target, vector_lanes
from compiler.calibration import run_pipeline_quantized
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from examples.zoo import ZOO
from ir.interpreter import run
from ir.program import Program
from ir.quant import QTensor, get_format, packed_nbytes
from passes import DEFAULT_PIPELINE
from passes.quant_layers import find_layers
from passes.quantization import QuantizeOptions

# The TVM target's pipeline with the greedy fusion solver: the same kind of groups, without
# the ILP's solve time (seconds on gpt), which is not what these tests are about.
PIPELINE = f"{DEFAULT_PIPELINE},fuse{{solver=greedy fuse-contractions=false multi-reduction=true}}"
CASES = [(m, f) for m in ("mlp", "gpt", "encoder") for f in ("int8", "int4_g64")]


@functools.cache
def captured(name: str):
    model, inputs = ZOO[name]()
    plan = plan_partitions(from_model(model, inputs))
    (part,) = plan.partitions()
    return convert_nodes(part, plan.consts, users_outside(part)).program, inputs


def quantized_program(name: str, fmt: str, mode: str = "weight-only"):
    fp32, inputs = captured(name)
    program = Program(fp32.module.clone(), dict(fp32.params))
    layers, _ = find_layers(program.forward)
    pipeline = f"quantize{{formats={fmt} solver=greedy avg-bits=32 mode={mode}}},{PIPELINE}"
    options = QuantizeOptions(formats=(fmt,), compare=False, sensitivity="proxy", mode=mode)
    run_pipeline_quantized(program, pipeline, inputs, options=options)
    return program, inputs, layers


@pytest.fixture(scope="module")
def built():
    """Each (model, format) quantized, lowered and built once for the whole module."""
    cache = {}

    def get(name: str, fmt: str, mode: str = "weight-only"):
        key = (name, fmt, mode)
        if key not in cache:
            program, inputs, layers = quantized_program(name, fmt, mode)
            kernel = TVMBackend().build(program, BuildOptions(cache_dir=None))
            cache[key] = (program, inputs, layers, kernel)
        return cache[key]

    return get


def assert_matches_emulation(got, want):
    for g, w in zip(got, want):
        if not w.is_floating_point():
            assert torch.equal(g, w)
            continue
        scale = float(w.detach().abs().max())
        torch.testing.assert_close(g, w, atol=1e-4 * scale, rtol=1e-4)


@pytest.mark.parametrize("model,fmt", CASES)
def test_zoo_matches_the_emulation(built, model, fmt):
    program, inputs, _, kernel = built(model, fmt)
    assert_matches_emulation(kernel(*inputs), run(program, *inputs))


@pytest.mark.parametrize("model,fmt", CASES)
def test_every_weight_takes_the_fused_path(built, model, fmt):
    program, _, layers, kernel = built(model, fmt)
    assert kernel.quant_paths == {layer.weight: FUSED for layer in layers}
    assert not kernel.reference_ops
    lowered = lower_program(program)
    text = lowered.module["main"].script()
    assert "kiln.ref.dequantize" not in text
    assert text.count("R.call_tir(kiln_qmm_") == sum(len(layer.users) for layer in layers)


@pytest.mark.parametrize("model,fmt", CASES)
def test_bound_bytes_are_the_packed_bytes(built, model, fmt):
    program, _, layers, kernel = built(model, fmt)
    f = get_format(fmt)
    assert kernel.param_bytes == sum(t.numel() * t.element_size() for t in program.params.values())
    for layer in layers:
        assert layer.weight not in program.params
        codes = program.params[f"{layer.weight}.qcodes"]
        scales = program.params[f"{layer.weight}.qscales"]
        assert codes.numel() == packed_nbytes(layer.numel, f.bits) and codes.dtype == torch.int8
        assert codes.numel() + scales.numel() * scales.element_size() == layer.nbytes(fmt)
    fp32 = sum(layer.fp32_bytes for layer in layers)
    assert sum(layer.nbytes(fmt) for layer in layers) <= fp32 * (0.26 if fmt == "int8" else 0.14)


def _allocations(func) -> list[int]:
    """Element counts of the buffers a PrimFunc allocates once TVM has placed and compacted
    them (the passes `tvm.compile` runs first), i.e. what one call really allocates."""
    passes = [
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
    ]
    mod = tvm.transform.Sequential(passes)(tvm.IRModule({"main": func}))
    sizes = []
    for line in mod["main"].script().splitlines():  # T.alloc_buffer((a, b, c), ...) and friends
        if "alloc_buffer((" in line or "alloc_local((" in line:
            dims = line.split("((", 1)[1].split(")", 1)[0]
            sizes.append(math.prod(int(d) for d in dims.split(",") if d.strip()))
    return sizes


def test_no_fp32_weight_exists_in_the_lowered_module(built):
    program, _, layers, _ = built("mlp", "int4_g64")
    lowered = lower_program(program)
    qmm = [f for gv, f in lowered.module.functions_items() if gv.name_hint.startswith("kiln_qmm_")]
    assert len(qmm) == len(layers)
    for func in qmm:
        buffers = {str(p.name): p for p in func.params}  # 0.27: params are buffers
        k = int(buffers["A"].shape[-1])
        weight = int(buffers["codes"].shape[0]) * 8 // 4  # int4 codes per byte: 2
        tile = max(_allocations(func))
        assert tile <= 32 * k and 2 * tile <= weight  # a tile of rows, never the weight
    smallest = min(layer.numel for layer in layers)
    assert not [c for c in _relax_constants(lowered.module["main"]) if c >= smallest]
    assert not [n for n in lowered.param_names if n.endswith("_weight")]


def _relax_constants(func) -> list[int]:
    sizes = []

    def visit(expr):
        if isinstance(expr, tvm.ir.expr.Constant):  # 0.27: relax.const builds ir Constants
            sizes.append(math.prod(int(d) for d in getattr(expr.value, "shape", ())))

    tvm.relax.analysis.post_order_visit(func, visit)
    return sizes


def test_conv2d_weights_decode_in_tir_and_match(built):
    program, inputs, layers, kernel = built("cnn", "int8")
    paths = {layer.weight: kernel.quant_paths[layer.weight] for layer in layers}
    assert {paths[layer.weight] for layer in layers if layer.kind == "conv2d"} == {DEQUANT_TIR}
    assert {paths[layer.weight] for layer in layers if layer.kind == "linear"} == {FUSED}
    assert_matches_emulation(kernel(*inputs), run(program, *inputs))


def test_weight_activation_mode_runs_activations_on_the_reference_path(built):
    program, inputs, layers, kernel = built("mlp", "int8", "weight-activation")
    assert kernel.quant_paths == {layer.weight: FUSED for layer in layers}
    assert {"kiln.quantize", "kiln.dequantize"} <= set(kernel.reference_ops)
    assert_matches_emulation(kernel(*inputs), run(program, *inputs))


# One format per decoder path: int / fixed point (sign extension, any width), minifloat
# bit fields, bf16 / fp16 bit casts; f32, f16 and E8M0 scales per row, group or tensor; words
# of 1, 2 and 3 bytes, and rows that do not start on a word (k = 35 for sub-byte codes).
DECODERS = (
    "int8",
    "int4_g32",
    "int8_tensor",
    "fp8_e4m3",
    "fp8_e5m2_tensor",
    "mxfp4",
    "mxfp6_e2m3",
    "mxint8",
    "bfp6",
    "bf16",
    "fp16",
    "fixed<12,4,AP_RND_CONV,AP_SAT>",
    "fixed<5,2>",
)
# (m, n, k, weight batch): few rows (inner kernel), many rows on a batched weight (outer).
PROBLEMS = ((3, 10, 35, 0), (16, 32, 64, 2))


def _scale_args(q) -> list[torch.Tensor]:
    if q.scales is None:
        return []
    return [q.scales.view(torch.int8) if q.scales.dtype == torch.uint8 else q.scales]


@pytest.mark.parametrize("fmt", DECODERS)
def test_every_decoder_is_exact(fmt):
    """Two checks, one compile per format. The decode alone: every code (inf and NaN
    patterns included; a spread of 4096 for 16-bit formats) with real scales equals
    `QuantFormat.dequantize` bit for bit. The fused kernel: both micro-kernels (few rows:
    inner; many rows on a batched weight: outer) against the emulation's weights."""
    target = cpu_target()
    f = get_format(fmt)
    assert unsupported_reason(f) is None
    g = torch.Generator().manual_seed(0)
    rows, k = 4, min(max(1 << f.bits, 32), 1024)
    codes = (torch.arange(rows * k).reshape(rows, k) * (7 if f.bits <= 12 else 987)) % (1 << f.bits)
    every = QTensor(f.name, codes, f.quantize(torch.randn(rows, k, generator=g)).scales)
    funcs = {"dequantize": dequantize_func(PackedLayout(f.name, rows, k), (rows, k), 1)}
    cases = []
    for i, (m, n, kk, batch) in enumerate(PROBLEMS):
        wrows = n * max(batch, 1)
        q = f.quantize(torch.randn(wrows, kk, generator=g) * 0.1)
        shape = MatmulShape((m, kk), (batch, m, n) if batch else (m, n), kk, 1 if batch else 0)
        layout = PackedLayout(f.name, wrows, kk)
        funcs[f"k{i}"] = quant_matmul_func(shape, layout, True, vector_lanes(target), 2)
        packed = [f.pack(q).view(torch.int8), *_scale_args(q)]
        cases.append((shape, f.dequantize(q).reshape(max(batch, 1), n, kk), packed))
    named = {name: fn.with_attr("global_symbol", name) for name, fn in funcs.items()}
    lib = tvm.compile(tvm.IRModule(named), target=target)
    out = torch.empty(rows, k)
    lib["dequantize"](f.pack(every).view(torch.int8), *_scale_args(every), out)
    torch.testing.assert_close(out, f.dequantize(every), rtol=0, atol=0, equal_nan=True)
    for i, (shape, weight, packed) in enumerate(cases):
        x, bias = torch.randn(shape.a_shape, generator=g), torch.randn(shape.n, generator=g)
        out = torch.empty(shape.out_shape)
        lib[f"k{i}"](x, *packed, bias, out)
        want = (x @ weight.transpose(-1, -2) + bias).reshape(shape.out_shape)
        torch.testing.assert_close(out, want, atol=1e-5 * float(want.abs().max()), rtol=1e-5)
