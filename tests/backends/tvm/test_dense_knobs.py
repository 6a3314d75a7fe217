"""The packed dense kernel's tuner knobs: the space, the build reading a tuned tile, the task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backends.base import BuildOptions
from backends.tvm.backend import TVMBackend
from backends.tvm.dense_knobs import DenseKnobs, dense_kernels
from backends.tvm.dense_packed import DenseTiles, choose_tiles
from backends.tvm.knobs import KnobError
from backends.tvm.target import cpu_target
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from compiler.tuner.configs import UniformConfigs
from passes import run_pipeline


def test_default_is_the_rule_and_values_only_change_code():
    space = DenseKnobs(length=64, k=768, n=768, lanes=16)
    rule = choose_tiles(64, 768, 16)
    assert space.tiles(space.default) == DenseTiles(rule.nb, rule.mt, rule.ku)
    assert space.values["dense_nb"] == (1, 2, 3) and max(space.values["dense_mt"]) == 8
    # K = 33: every unroll is 1 (the kernel takes the largest of ku, 4, 2, 1 dividing K)
    assert DenseKnobs(7, 33, 20, 16).values["dense_ku"] == (1,)
    assert DenseKnobs(7, 36, 20, 16).canonical({"dense_ku": 8})["dense_ku"] == 4
    # 7 rows: no tile taller than 7; N = 20: at most two vectors of outputs
    assert DenseKnobs(7, 36, 20, 16).values["dense_mt"] == (1, 2, 3, 4, 5, 6, 7)
    assert DenseKnobs(7, 36, 20, 16).values["dense_nb"] == (1, 2)


def test_a_tile_that_would_spill_the_registers_is_shrunk():
    assert DenseKnobs(64, 64, 64, 16).canonical({"dense_mt": 8, "dense_nb": 3})["dense_mt"] == 8  # 24 zmm
    assert DenseKnobs(64, 64, 64, 8).canonical({"dense_mt": 8, "dense_nb": 3})["dense_mt"] == 4  # 12 ymm


@pytest.mark.parametrize("config", [{"tile": 8}, {"dense_mt": 9}, {"dense_nb": True}])
def test_bad_configs_are_named(config):
    with pytest.raises(KnobError, match="dense knob|unknown dense"):
        DenseKnobs(64, 64, 64, 16).canonical(config)


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 40)

    def forward(self, x):
        return self.fc(x)  # alone: a uniform config reaches no other kernel


def _program(model: nn.Module, inputs):
    plan = plan_partitions(from_model(model, inputs))
    [part] = plan.partitions()
    program = convert_nodes(part, plan.consts, users_outside(part, set())).program
    run_pipeline(program.module, TVMBackend().pipeline())  # with fuse: the kernel's group
    return program


def test_a_tuned_tile_reaches_the_kernel_and_keeps_the_numbers():
    torch.manual_seed(0)
    model, x = _Mlp().eval(), torch.randn(2, 9, 36)
    program = _program(model, (x,))
    [(site, space)] = dense_kernels(program)
    assert site.name.startswith("kiln_dense_g") and space == DenseKnobs(9, 36, 40, space.lanes)
    config = {"dense_mt": 3, "dense_nb": 1, "dense_ku": 2}
    kernel = TVMBackend().build(program, BuildOptions(cache_dir=None, kernel_configs=UniformConfigs(config)))
    [path] = kernel.dense_paths.values()
    assert f"nb={space.lanes} mt=3 ku=2 (tuned)" in path, path
    assert kernel.tuned == {site.name: space.canonical(config)}
    with torch.no_grad():
        torch.testing.assert_close(kernel(x)[0], model(x), rtol=1e-4, atol=1e-4)
    untuned = TVMBackend().build(program, BuildOptions(cache_dir=None))
    assert "(tuned)" not in next(iter(untuned.dense_paths.values()))


def test_the_tuner_collects_packed_linears_with_their_own_space():
    from compiler.tuner.kernels import collect_tasks
    from compiler.tuner.search import kernel_space

    torch.manual_seed(0)
    tasks = collect_tasks(_Mlp().eval(), (torch.randn(2, 9, 36),), "mlp", str(cpu_target()))
    dense = [t for t in tasks if "kiln_dense_g" in t.label]
    assert len(dense) == 1 and dense[0].ops == "linear"
    space = kernel_space(dense[0], 2)
    assert isinstance(space, DenseKnobs) and space.default == DenseKnobs(9, 36, 40, space.lanes).default
