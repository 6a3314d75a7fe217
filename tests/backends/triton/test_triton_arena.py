"""Triton with `map-memory`: intermediates are views into one arena, outputs identical.

Each model is compiled twice, with the Triton pipeline and with `map-memory` after it, and
run under the interpreter; the outputs must be bit-identical, on two calls (the arena is
reused). cnn also covers reference fallbacks (conv2d, pool) copying into their views.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backends.triton.backend import TritonBackend
from compiler import compile_model
from examples.zoo import load

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _both(name: str, tmp_path):
    model, inputs = load(name)
    pipeline = TritonBackend().pipeline().removesuffix(",map-memory")
    plain = compile_model(model, inputs, target="triton", pipeline=pipeline, use_cache=False,
                          out_dir=tmp_path / "plain")
    arena = compile_model(model, inputs, target="triton", pipeline=f"{pipeline},map-memory",
                          use_cache=False, out_dir=tmp_path / "arena")
    return plain, arena, inputs


def _flat(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, list | tuple) else [out]


def _source(compiled) -> str:
    (part,) = compiled.report["partitions"]
    return Path(part["artifacts"]["kernels"]).read_text()


def _check(name: str, tmp_path) -> None:
    plain, arena, inputs = _both(name, tmp_path)
    with torch.no_grad():
        expected = _flat(plain(*inputs))
        for _ in range(2):
            got = _flat(arena(*inputs))
            assert all(torch.equal(a, b) for a, b in zip(expected, got))
    (part,) = arena.report["partitions"]
    memory = part["decisions"]["memory"]
    assert memory["arena_bytes"] <= memory["best_fit_bytes"]
    source, before = _source(arena), _source(plain)
    assert "_ARENAS" in source and "arena[" in source
    assert "_ARENAS" not in before
    # fewer allocations per call: planned buffers became views
    assert source.count("torch.empty(") < before.count("torch.empty(")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_arena_outputs_identical(name, tmp_path):
    _check(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["encoder", "gpt", "moe"])
def test_arena_outputs_identical_transformers(name, tmp_path):
    _check(name, tmp_path)
