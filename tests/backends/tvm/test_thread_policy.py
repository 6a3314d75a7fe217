"""The per-program thread plan: which pool owns the cores, and that the build follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from backends.tvm.thread_policy import MAX_LIBRARY_SHARE, MIN_FLOPS_PER_OP, WorkSplit, plan_threads
from compiler import compile_model

# A parallel TIR kernel calls TVM's pool through this runtime symbol; a serial one never does.
PARALLEL_LAUNCH = b"TVMBackendParallelLaunch"


class Mlp(nn.Module):
    """Large linears on parameters: Kiln's packed kernels, no library call left."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(256, 512), nn.Linear(512, 256)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Gram(nn.Module):
    """Activation-by-activation matmuls (torch's GEMM through the library path) dominate."""

    def forward(self, x):
        g = x @ x.transpose(-1, -2)
        return torch.relu(g @ x) + 1.0


def test_rule_gives_the_cores_to_the_pool_doing_the_work():
    light = plan_threads(WorkSplit(library_flops=10, total_flops=100, library_calls=1), threads=2)
    assert (light.kernel_threads, light.torch_threads_in_call) == (2, 1)
    heavy = plan_threads(WorkSplit(library_flops=90, total_flops=100, library_calls=3), threads=2)
    assert (heavy.kernel_threads, heavy.torch_threads_in_call) == (1, None)
    edge = WorkSplit(library_flops=int(MAX_LIBRARY_SHARE * 1000), total_flops=1000, library_calls=1)
    assert plan_threads(edge, threads=2).kernel_threads == 2
    assert plan_threads(WorkSplit(0, 0, 0), threads=1).kernel_threads == 1
    assert "serial TIR" in heavy.reason and "90%" in heavy.reason
    # many small kernels: a fork/join costs more than the second core saves
    small = plan_threads(WorkSplit(0, 100 * (MIN_FLOPS_PER_OP - 1), 0, ops=100), threads=2)
    assert small.kernel_threads == 1 and "per op" in small.reason
    assert plan_threads(WorkSplit(0, 100 * MIN_FLOPS_PER_OP, 0, ops=100), threads=2).kernel_threads == 2


def test_a_model_of_small_kernels_stays_serial(tmp_path: Path):
    torch.manual_seed(0)
    compiled = _compile(Mlp().eval(), torch.randn(1, 256), tmp_path)  # one row: ~0.1 MFLOP per op
    assert compiled.report["thread_plan"].startswith("serial TIR") and "per op" in compiled.report["thread_plan"]


def _compile(model: nn.Module, x: torch.Tensor, out: Path, **options):
    compiled = compile_model(model, (x,), target="tvm", use_cache=False, out_dir=out, **options)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    return compiled


def test_a_program_without_library_calls_runs_parallel_tir_with_torch_held(tmp_path: Path):
    torch.manual_seed(0)
    before = torch.get_num_threads()
    compiled = _compile(Mlp().eval(), torch.randn(64, 256), tmp_path)
    report = compiled.report
    assert report["pool_threads"] == {"tvm": 2, "torch": 1}
    assert report["thread_plan"].startswith("parallel TIR")
    assert PARALLEL_LAUNCH in (tmp_path / "kernel.so").read_bytes()
    assert torch.get_num_threads() == before  # held only inside the call


def test_a_library_heavy_program_builds_serial_kernels_and_leaves_torch_alone(tmp_path: Path):
    compiled = _compile(Gram().eval(), torch.randn(4, 96, 96), tmp_path)
    report = compiled.report
    assert report["pool_threads"]["tvm"] == 1
    assert report["thread_plan"].startswith("serial TIR")
    assert PARALLEL_LAUNCH not in (tmp_path / "kernel.so").read_bytes()


def test_an_explicit_thread_count_bypasses_the_rule(tmp_path: Path):
    compiled = _compile(Gram().eval(), torch.randn(4, 96, 96), tmp_path, num_threads=2)
    assert compiled.report["pool_threads"]["tvm"] == 2
    assert "as asked" in compiled.report["thread_plan"]


def test_a_policy_forces_the_plan_and_a_bad_one_is_named(tmp_path: Path):
    compiled = _compile(Mlp().eval(), torch.randn(64, 256), tmp_path, extra={"threads": "serial"})
    assert compiled.report["pool_threads"]["tvm"] == 1
    assert compiled.report["thread_plan"].startswith("serial TIR (asked")
    assert PARALLEL_LAUNCH not in (tmp_path / "kernel.so").read_bytes()
    with pytest.raises(ValueError, match="threads: unknown policy 'fast'"):
        compile_model(Mlp().eval(), (torch.randn(4, 256),), target="tvm", use_cache=False, extra={"threads": "fast"})
