"""The packed dense kernel (`backends/tvm/dense_packed.py`): numbers against F.linear, and
the generated code: the kernel is the one called, its weight is bound packed, the original
weight is not bound at all, and the policy knob sends linears back to the library.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tvm  # a required dependency: a broken TVM fails these tests instead of skipping them

from backends.base import BuildOptions
from backends.tvm.backend import TVMBackend
from backends.tvm.dense_packed import (
    DenseOptions,
    DenseTiles,
    block_width,
    choose_tiles,
    dense_packed_func,
    pack_weight,
    tiled_length,
    use_packed,
)
from backends.tvm.lower import lower_program
from backends.tvm.schedule import SCHEDULE_ATTR
from backends.tvm.target import cpu_target, host_lanes
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from passes import DEFAULT_PIPELINE, run_pipeline

TOL = {"atol": 1e-4, "rtol": 1e-4}
PIPELINE = f"{DEFAULT_PIPELINE},fuse{{solver=greedy fuse-contractions=false multi-reduction=true}}"


@functools.cache
def _built(lead: tuple[int, ...], k: int, n: int, tiles: DenseTiles, bias: bool):
    func = dense_packed_func(lead, k, n, tiles, bias, threads=2)
    return tvm.tirx.build(func, target=cpu_target())["main"]


# (lead dims, K, N): N ragged (not a multiple of the 16/32 block), K not a multiple of the
# k unroll, a single row, 3-d activations with a ragged last row tile, unit lead dims, tiny
# N (one 16-wide block), rows in no whole number of tiles (13, 97).
SHAPES = [
    ((8,), 256, 512),
    ((8,), 64, 50),
    ((5,), 37, 33),
    ((1,), 100, 70),
    ((2, 13), 48, 10),
    ((4, 1), 72, 40),
    ((1, 3, 1), 16, 20),
    ((97,), 120, 256),
    ((3,), 256, 1),
]


@pytest.mark.parametrize("lead,k,n", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear(lead, k, n, bias):
    torch.manual_seed(0)
    x, w, b = torch.randn(*lead, k), torch.randn(n, k) / k**0.5, torch.randn(n)
    tiles = choose_tiles(tiled_length(lead), n)
    out = torch.empty(*lead, n)
    args = [x, pack_weight(w, tiles.nb)] + ([b] if bias else [])
    _built(lead, k, n, tiles, bias)(*args, out)
    torch.testing.assert_close(out, F.linear(x, w, b if bias else None), **TOL)


@pytest.mark.parametrize("nb,mt,ku", [(16, 8, 4), (32, 3, 8), (64, 4, 1)])
def test_other_tiles_match(nb, mt, ku):
    torch.manual_seed(1)
    x, w, b = torch.randn(12, 72), torch.randn(100, 72), torch.randn(100)
    out = torch.empty(12, 100)
    _built((12,), 72, 100, DenseTiles(nb, mt, ku), True)(x, pack_weight(w, nb), b, out)
    torch.testing.assert_close(out, F.linear(x, w, b), **TOL)


def test_pack_layout():
    w = torch.arange(40 * 3, dtype=torch.float32).reshape(40, 3)
    p = pack_weight(w, 16)
    assert p.shape == (3, 3, 16) and p.is_contiguous()
    assert torch.equal(p[1, 2, 5], w[16 + 5, 2])
    assert torch.equal(p[2, :, 8:], torch.zeros(3, 8))  # rows 40..47 are padding


def test_tiles_and_rule():
    assert choose_tiles(8, 512) == DenseTiles(32, 8, 8)
    assert choose_tiles(3, 10) == DenseTiles(16, 3, 8)
    assert choose_tiles(97, 100).mt == 7  # 98 rows: the least padding
    assert choose_tiles(64, 100).mt == 8 and choose_tiles(9, 100).mt == 5
    assert choose_tiles(64, 100, lanes=8) == DenseTiles(16, 4, 8)  # AVX2: 12 of 16 ymm at most
    assert tiled_length((2, 32)) == 32 and tiled_length((8, 1)) == 8 and tiled_length((1,)) == 1
    auto = DenseOptions()
    assert use_packed(8, 256, 512, auto) and use_packed(4096, 1024, 1024, auto)
    assert use_packed(128, 256, 512, auto, lanes=8, cpu="znver1")  # AVX2 Zen 1: few rows
    assert not use_packed(512, 256, 512, auto, lanes=8, cpu="znver1")  # MKL wins there
    assert not use_packed(8, 256, 512, auto, lanes=4)  # SSE only: the library
    serial = DenseOptions(threads=1)  # TVM's pool serial, torch's GEMM on every core
    assert use_packed(128, 256, 512, DenseOptions(threads=1, library_threads=1), lanes=8, cpu="znver1")
    assert use_packed(32, 256, 512, serial, lanes=8, cpu="znver1")
    assert not use_packed(128, 256, 512, serial, lanes=8, cpu="znver1")
    assert use_packed(4096, 256, 512, serial)  # AVX-512 Zen: 2-3.5x MKL per core, as before
    # An AVX-512 CPU whose BLAS has AVX-512 kernels too: only the weight-bound few rows.
    assert use_packed(32, 256, 512, auto, cpu="sapphirerapids")
    assert not use_packed(64, 256, 512, auto, cpu="sapphirerapids")
    assert not use_packed(8192, 256, 512, auto)  # more rows than measured
    assert not use_packed(8, 16384, 8192, auto)  # 512 MB weight: more than measured
    assert use_packed(4096, 256, 512, DenseOptions(policy="packed"))
    assert not use_packed(8, 256, 512, DenseOptions(policy="library"))
    with pytest.raises(ValueError, match="policy"):
        DenseOptions(policy="fast")


# ---- through the backend ----------------------------------------------------------------
class Tied(nn.Module):
    """A weight used by two linears (packed once) and a head tied to the embedding table
    (bound packed for the head and as is for the gather)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 64)
        self.a = nn.Linear(64, 100)
        self.b = nn.Linear(100, 100, bias=False)
        self.c = nn.Linear(100, 64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.a(self.emb(ids)))
        h = torch.relu(self.b(h)) + self.b(h * 0.5)
        return F.linear(self.c(h), self.emb.weight)


def _program(model: nn.Module, inputs: tuple[torch.Tensor, ...]):
    plan = plan_partitions(from_model(model.eval(), inputs))
    (part,) = plan.partitions()
    program = convert_nodes(part, plan.consts, users_outside(part)).program
    run_pipeline(program.module, PIPELINE)
    return program


@functools.cache
def _tied():
    torch.manual_seed(0)
    model, x = Tied(), torch.randint(0, 20, (2, 4))
    return model, x, _program(model, (x,))


def _dense_funcs(module) -> dict[str, object]:
    return {
        g.name_hint: f
        for g, f in module.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and g.name_hint.startswith("kiln_dense_")
    }


def test_backend_binds_weights_packed():
    model, x, program = _tied()
    kernel = TVMBackend().build(program, BuildOptions(cache_dir=None))
    with torch.no_grad():
        torch.testing.assert_close(kernel(x)[0], model(x), **TOL)
    lowered = lower_program(program)
    funcs = _dense_funcs(lowered.module)
    assert len(funcs) == 4  # b's two uses share one kernel (same shapes)
    assert all(str(f.attrs[SCHEDULE_ATTR]) == "dense_packed" for f in funcs.values())
    assert "kiln.linear" not in lowered.module["main"].script()  # no library call left
    # Each weight is bound once, packed [N/nb, K, nb]; the embedding table is also read by
    # the gather, so it stays bound as is too. The linears' originals are not bound at all.
    shapes = sorted(tuple(p.shape) for p in kernel.params)

    def packed(n: int, k: int) -> tuple[int, int, int]:  # nb: 32 with AVX-512, 16 with AVX2
        nb = block_width(n, host_lanes())
        return (-(-n // nb), k, nb)

    assert shapes.count(packed(100, 64)) == 1 and shapes.count(packed(100, 100)) == 1
    assert shapes.count(packed(64, 100)) == 1 and shapes.count(packed(20, 64)) == 1
    assert (20, 64) in shapes
    assert (100, 64) not in shapes and (100, 100) not in shapes and (64, 100) not in shapes
    assert all(path.startswith("packed") for path in kernel.dense_paths.values())


def test_a_changed_rule_misses_the_artifact_cache(tmp_path, monkeypatch):
    """Which linears run packed depends on the host and on the rule; an artifact built under
    another decision expects other parameters, so it must not be loaded (it was, once: a
    rule change without a version bump crashed `gpt` with an ndim mismatch)."""
    from backends.tvm import dense_packed

    model, x, program = _tied()
    first = TVMBackend().build(program, BuildOptions(cache_dir=tmp_path))
    again = TVMBackend().build(program, BuildOptions(cache_dir=tmp_path))
    assert not first.cache_hit and again.cache_hit
    monkeypatch.setattr(dense_packed, "use_packed", lambda *args, **kwargs: False)
    changed = TVMBackend().build(program, BuildOptions(cache_dir=tmp_path))
    assert not changed.cache_hit
    assert all(path.startswith("library") for path in changed.dense_paths.values())
    with torch.no_grad():
        torch.testing.assert_close(changed(x)[0], model(x), **TOL)


def test_library_policy_keeps_torch_gemm():
    model, x, program = _tied()
    kernel = TVMBackend().build(program, BuildOptions(cache_dir=None, extra={"dense": "library"}))
    with torch.no_grad():
        torch.testing.assert_close(kernel(x)[0], model(x), **TOL)
    lowered = lower_program(program, DenseOptions(policy="library"))
    assert not _dense_funcs(lowered.module)
    assert lowered.module["main"].script().count("kiln.linear") == 5
    assert all(path.startswith("library") for path in kernel.dense_paths.values())


class _XW(nn.Module):
    """`x @ W + b` with W [K, N] (GPT-2's Conv1D), W also read by a second matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(48, 40) * 0.1)
        self.b = nn.Parameter(torch.randn(40))
        self.w2 = nn.Parameter(torch.randn(40, 24) * 0.1)

    def forward(self, x):
        h = torch.relu(x @ self.w + self.b)
        return h @ self.w2, x @ self.w


def test_matmul_with_a_parameter_weight_runs_packed():
    from compiler import compile_model

    torch.manual_seed(0)
    model, x = _XW().eval(), torch.randn(2, 7, 48)
    compiled = compile_model(model, (x,), target="tvm", use_cache=False, extra={"dense": "packed"})
    with torch.no_grad():
        for got, want in zip(compiled(x), model(x), strict=True):
            torch.testing.assert_close(got, want, **TOL)
    paths = compiled.report["dense_paths"]
    assert paths and all(p.startswith("packed") for p in paths.values()), paths


class _Experts(nn.Module):
    """Dense experts on stacked weights, as the zoo's moe: `[T, K] @ [E, K, H]`, then
    `[E, T, H] @ [E, H, N]`; odd sizes (K and N not multiples of a vector)."""

    def __init__(self, e: int = 3, k: int = 33, h: int = 20, n: int = 17) -> None:
        super().__init__()
        self.w_up = nn.Parameter(torch.randn(e, k, h) * k**-0.5)
        self.w_down = nn.Parameter(torch.randn(e, h, n) * h**-0.5)

    def forward(self, tokens):
        return torch.relu(tokens @ self.w_up) @ self.w_down


@pytest.mark.parametrize("rows", [1, 7, 33])
def test_stacked_expert_weights_run_packed(rows):
    from compiler import compile_model

    torch.manual_seed(0)
    model, x = _Experts().eval(), torch.randn(rows, 33)
    compiled = compile_model(model, (x,), target="tvm", use_cache=False, extra={"dense": "packed"})
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), **TOL)
    paths = compiled.report["dense_paths"]
    assert set(paths) == {"p_w_up", "p_w_down"}, paths  # torch.export's parameter names
    assert paths["p_w_up"].startswith(f"packed: 3x({rows}x33->20)"), paths
    assert paths["p_w_down"].startswith(f"packed: 3x({rows}x20->17)"), paths


def test_an_edited_lowering_source_misses_the_artifact_cache(tmp_path, monkeypatch):
    """The artifact key holds a digest of the backend's sources: a kernel rewritten without a
    CODEGEN_VERSION bump must not be served from an artifact the old code built (it was: the
    zoo cnn's stem ran a 125 us kernel out of the cache after its lowering became a 25 us one)."""
    from backends import source_digest
    from backends.tvm import backend

    *_, program = _tied()
    first = TVMBackend().build(program, BuildOptions(cache_dir=tmp_path))
    assert not first.cache_hit
    real = source_digest.source_digest
    monkeypatch.setattr(backend, "source_digest", lambda packages: real(packages) + " and conv_direct.py edited")
    edited = TVMBackend().build(program, BuildOptions(cache_dir=tmp_path))
    assert not edited.cache_hit
    monkeypatch.setattr(backend, "source_digest", real)
    assert TVMBackend().build(program, BuildOptions(cache_dir=tmp_path)).cache_hit
