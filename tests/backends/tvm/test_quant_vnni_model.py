"""`quantize{formats=int8_dyn}` models on the TVM backend: the int8 kernel path end to end.

The quantized program's interpreter run is the exact emulation (activation rounding
included). The TVM build runs each layer as one `int8_dyn` kernel call (the activation's
quantize/dequantize pair folded in) and must match it: exactly up to float32 summation
order (1e-5) on models where no activation lands within an ulp of a rounding boundary;
on deeper models a few rows may round one code differently (an upstream op's last bit
differs between TVM and torch), so there the test asks that almost every row matches and
that the whole output stays within the format's own error of the emulation.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from backends.base import BuildOptions
from backends.tvm import quant_vnni as qv
from backends.tvm.backend import TVMBackend
from backends.tvm.lower import lower_program
from ir.interpreter import run

sys.path.insert(0, str(Path(__file__).parent))
import test_quantized as tq

PATH = qv.VNNI_PATH if qv.has_vnni() else qv.PLAIN_PATH


class QKV(nn.Module):
    """Three projections of one normalized input: CSE shares their activation quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.q, self.k, self.v = nn.Linear(64, 48), nn.Linear(64, 48), nn.Linear(64, 48, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.q(h) * self.k(h) + self.v(h)


def _qkv():
    torch.manual_seed(0)
    return QKV(), (torch.randn(3, 11, 64),)


@contextlib.contextmanager
def _in_zoo(name: str):
    """`qkv_test` in the zoo registry `test_quantized` reads, only while it is captured:
    left there, it would become a case of every later test parametrized over the zoo."""
    added = name == "qkv_test" and name not in tq.ZOO
    if added:
        tq.ZOO[name] = _qkv
    try:
        yield
    finally:
        if added:
            del tq.ZOO[name]


@functools.cache
def built(model: str):
    with _in_zoo(model):
        program, inputs, layers = tq.quantized_program(model, "int8_dyn")
    kernel = TVMBackend().build(program, BuildOptions(cache_dir=None))
    return program, inputs, layers, kernel


def outputs(model: str) -> tuple[torch.Tensor, torch.Tensor]:
    program, inputs, _, kernel = built(model)
    got = kernel(*inputs)
    got = got[0] if isinstance(got, (list, tuple)) else got
    return got.detach(), run(program, *inputs)[0].detach()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("model", ["mlp", "qkv_test"])
def test_model_runs_the_int8_kernel_and_matches_the_emulation(model):
    _, _, layers, kernel = built(model)
    assert kernel.quant_paths == {layer.weight: PATH for layer in layers}
    assert not kernel.reference_ops  # the activation quantize pairs are folded, not emulated
    got, want = outputs(model)
    assert rel(got, want) < 1e-5


def test_lowered_module_calls_the_kernel_on_the_fp32_activation():
    program, *_ = built("qkv_test")
    text = lower_program(program).module["main"].script()
    assert text.count("kiln_qmm_int8_dyn_33x64x48") == 3
    assert "kiln.ref.quantize" not in text
    lowered = lower_program(program)
    assert not [n for n in lowered.param_names if n.endswith(".qcodes")]  # bound VNNI-packed only
    assert sum(1 for n, _ in lowered.derived if ".vnni" in n) == 3


def test_without_vnni_the_plain_path_is_taken_and_correct(monkeypatch):
    monkeypatch.setattr(qv, "has_vnni", lambda target=None: False)
    program, inputs, _ = tq.quantized_program("mlp", "int8_dyn")
    kernel = TVMBackend().build(program, BuildOptions(cache_dir=None))
    assert set(kernel.quant_paths.values()) == {qv.PLAIN_PATH}
    got = kernel(*inputs)
    got = got[0] if isinstance(got, (list, tuple)) else got
    assert rel(got.detach(), run(program, *inputs)[0].detach()) < 1e-5


@pytest.mark.slow
def test_gpt_matches_the_emulation_row_by_row():
    kernel = built("gpt")[3]
    assert set(kernel.quant_paths.values()) == {PATH}
    got, want = outputs("gpt")
    rows = (got - want).abs().amax(-1) / want.abs().amax(-1)
    assert float((rows < 1e-4).float().mean()) > 0.8
    assert rel(got, want) < 1e-2


def test_matmul_weights_take_the_kernel_and_conv_keeps_its_path():
    """`x @ W` (W [K, N], codes stored as W^T's rows) runs the kernel; a conv2d's int8_dyn
    weight decodes in TIR and its activation pair runs the emulation, as any conv does."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "passes"))
    from test_quantization import small_program

    from backends.tvm.pipeline import kiln_pipeline
    from passes import run_pipeline
    from passes.quantization import QuantizeOptions, quantize_program

    program, inputs = small_program()
    quantize_program(program, inputs, QuantizeOptions(formats=("int8_dyn",), avg_bits=9.0, compare=False))
    run_pipeline(program.module, kiln_pipeline().replace(",map-memory", ""))
    kernel = TVMBackend().build(program, BuildOptions(cache_dir=None))
    assert kernel.quant_paths == {"conv": "dequant-tir", "fc1": PATH, "fc2": PATH, "proj": PATH}
    got = kernel(*inputs)
    got = got[0] if isinstance(got, (list, tuple)) else got
    assert rel(got.detach(), run(program, *inputs)[0].detach()) < 1e-5
