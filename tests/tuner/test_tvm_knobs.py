"""backends/tvm/knobs.py, knob_space.py and the search's proposals: only valid
configurations, each kernel's code measured once, and every configuration computes right."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.tvm.knob_space import KernelKnobs
from backends.tvm.knobs import (
    KNOBS,
    PARALLEL_KNOBS,
    KnobError,
    all_configs,
    canonical,
    config_id,
    default_config,
    knob_values,
    schedule_options,
    stays_serial,
)
from backends.tvm.loop_steps import ScheduleOptions
from compiler.tuner.kernels import KernelTask
from compiler.tuner.measure import MeasureResult
from compiler.tuner.search import SearchOptions, search_kernel

EVERY_KNOB = [k.name for k in KNOBS]


def test_the_table_declares_schedule_options_fields_with_their_defaults():
    assert {k.name for k in KNOBS} <= set(ScheduleOptions.__dataclass_fields__)
    assert schedule_options(default_config(8), 8) == ScheduleOptions()
    for knob in KNOBS:
        assert knob.default in knob.values
    assert {"vector_lanes", "tile", "loop_order", "parallel_depth", "auto_unroll"} <= set(EVERY_KNOB)


@pytest.mark.parametrize("config, message", [
    ({"tile_rows": 32}, "unknown TVM knob"),
    ({"chunks_per_thread": 3}, "chunks_per_thread=3"),
    ({"num_threads": 4}, "num_threads=4"),  # more threads than the build runs (2)
    ({"num_threads": True}, "num_threads=True"),
    ({"tile": 12}, "tile=12"),
    ({"vector_lanes": 3}, "vector_lanes=3"),
    ({"loop_order": 2}, "loop_order=2"),
    ({"parallel_depth": 5}, "parallel_depth=5"),
    ({"auto_unroll": 32}, "auto_unroll=32"),
    ({"auto_unroll": 16.0}, "auto_unroll=16.0"),
])
def test_invalid_configurations_are_refused(config, message):
    with pytest.raises(KnobError, match=message):
        canonical(config, max_threads=2)
    with pytest.raises(KnobError, match=message):
        KernelKnobs.static(2, 1 << 20).canonical(config)


def test_knobs_that_cannot_matter_collapse_to_their_defaults():
    serial = canonical({"num_threads": 1, "chunks_per_thread": 16, "parallel_depth": 2, "tile": 16}, 2)
    assert serial == {**default_config(2), "num_threads": 1, "tile": 16}  # loop knobs stay
    fixed = canonical({"parallel_depth": 2, "chunks_per_thread": 16}, 2)
    assert fixed["chunks_per_thread"] == default_config(2)["chunks_per_thread"]
    configs = all_configs(2)  # the threading knobs alone, as before the loop knobs
    assert configs[0] == default_config(2)
    assert sum(c["num_threads"] == 1 for c in configs) == 1
    parallel = math.prod(len(v) for name, v in knob_values(2).items()
                         if name in ("min_parallel_elems", "chunks_per_thread"))
    assert len({config_id(c) for c in configs}) == len(configs) == 1 + parallel
    assert all(canonical(c, 2) == c for c in configs)


# ---- per kernel ---------------------------------------------------------------------------


class AddGelu(nn.Module):
    def forward(self, x, y):
        return F.gelu(x + y)


class Softmax(nn.Module):
    def forward(self, x):
        return (x * 0.5).softmax(-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Transpose(nn.Module):
    def forward(self, x):
        return (x.transpose(1, 2) * 2.0).contiguous()


class Mean(nn.Module):
    def forward(self, x):
        return (x * 2.0).mean(1)


def _case(name: str):
    torch.manual_seed(0)
    return {
        "add+gelu": lambda: (AddGelu(), (torch.randn(4, 32, 48), torch.randn(4, 32, 48))),
        "softmax": lambda: (Softmax(), (torch.randn(2, 4, 16, 32) * 3,)),
        "rms_norm": lambda: (RMSNorm(40), (torch.randn(4, 16, 40),)),  # 40: vector tails
        "transpose": lambda: (Transpose(), (torch.randn(2, 64, 48),)),
        "mean": lambda: (Mean(), (torch.randn(4, 24, 64),)),
    }[name]()


CASES = ["add+gelu", "softmax", "rms_norm", "transpose", "mean"]
_tasks: dict[str, tuple] = {}


def _task(name: str):
    """(model, inputs, the model's one TIR kernel as a tuning task)."""
    if name not in _tasks:
        from backends.tvm.target import cpu_target
        from compiler.tuner.kernels import collect_tasks

        model, inputs = _case(name)
        [task] = collect_tasks(model, inputs, name, str(cpu_target()))
        _tasks[name] = (model.eval(), inputs, task)
    return _tasks[name]


def _sample(space: KernelKnobs, n: int, seed: int) -> list[dict[str, int]]:
    rng, values, out = random.Random(seed), space.values, {}
    for _ in range(50 * n):
        if len(out) == n:
            break
        config = space.canonical({k: rng.choice(v) for k, v in values.items()})
        out.setdefault(space.code_id(config), config)
    return list(out.values())


def test_the_values_of_a_kernel_are_those_that_change_its_code():
    from backends.tvm.target import cpu_target, vector_lanes

    spaces = {name: _task(name)[2].knob_space(2) for name in CASES}
    transpose, rows, mean = spaces["transpose"].values, spaces["rms_norm"].values, spaces["mean"].values
    assert set(transpose["tile"]) == {0, 8, 16}  # 48 x 64: 32 and 64 do not divide 48
    assert transpose["loop_order"] == (0, 1)
    assert rows["tile"] == rows["loop_order"] == (0,)  # one long loop per row: nothing to tile
    assert mean["loop_order"] == (0, 1)  # a column reduction: which loop goes innermost
    native = vector_lanes(cpu_target(), 32)  # 16 with AVX-512, 8 with AVX2: the same as 0
    assert (16 in spaces["softmax"].values["vector_lanes"]) == (native != 16)
    assert spaces["add+gelu"].values["auto_unroll"] == (0, 16)  # GELU: 377 nodes to copy
    assert spaces["transpose"].values["auto_unroll"] == (0, 16, 64, 512)
    for name, space in spaces.items():
        values = space.values
        assert space.canonical(default_config(2)) == default_config(2), name
        for config in _sample(space, 6, seed=1):
            assert space.canonical(config) == config
            assert all(config[k] in values[k] for k in values), (name, config)
    # Values mapped away compile to what their representative compiles to.
    space = spaces["transpose"]
    assert space.canonical({"tile": 32}) == default_config(2)
    assert space.code_id(default_config(2)) == space.code_id({**default_config(2), "tile": 0})
    assert space.code_id({**default_config(2), "tile": 16}) != space.code_id(default_config(2))


@pytest.mark.parametrize("name", CASES)
def test_sampled_configurations_build_and_match_torch(name):
    from backends.base import BuildOptions
    from backends.tvm.backend import TVMBackend
    from compiler.tuner.configs import UniformConfigs

    model, inputs, task = _task(name)
    with torch.no_grad():
        expected = model(*inputs)
    space = task.knob_space(2)
    configs = [default_config(2), *_sample(space, 5, seed=CASES.index(name))]
    for config in configs:
        options = BuildOptions(cache_dir=None, num_threads=2, kernel_configs=UniformConfigs(config))
        kernel = TVMBackend().build(task.program, options)
        [actual] = kernel(*inputs)
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4, msg=f"{name} {config}")


# ---- the search ---------------------------------------------------------------------------


def _fake_task(log2_work: float) -> KernelTask:
    return KernelTask(
        key="ab" * 32, label="t/kiln_group_0", ops="add", program=None,  # type: ignore[arg-type]
        features={"log2_work": log2_work, "roofline_us": 1.0}, count=1, roofline_s=1e-6, workload="t",
    )


@pytest.mark.parametrize("log2_work", [10.0, 20.0])  # 1024 iterations: every config serial
def test_the_search_proposes_only_valid_distinct_configurations(log2_work):
    values = knob_values(2)
    seen: list[str] = []
    rng = random.Random(0)

    def measure(task, configs, phase, rounds):
        for config in configs:
            assert canonical(config, 2) == config
            assert all(config[name] in values[name] for name in values)
            if phase != "confirm":
                seen.append(config_id(config))
        return MeasureResult([rng.uniform(1e-6, 1e-5) for _ in configs])

    result = search_kernel(_fake_task(log2_work), measure, SearchOptions(trials=10, seed=3))
    assert len(seen) == len(set(seen)) == 10  # nothing measured twice
    assert result.best_s is not None
    assert seen[0] == config_id(default_config(2))  # the baseline, measured as is
    # A serial kernel's threading knobs are the defaults' (which keep it serial too):
    # the same code is never measured under another threading name.
    iterations = 2 ** int(log2_work)
    for ident in seen:
        config = dict(part.split("=") for part in ident.split(","))
        config = {k: int(v) for k, v in config.items()}
        if stays_serial(config, iterations):
            assert all(config[k] == default_config(2)[k] for k in (*PARALLEL_KNOBS, "num_threads")
                       if k in config) == stays_serial(default_config(2), iterations)


def test_the_search_measures_each_code_of_a_real_kernel_once():
    _, _, task = _task("rms_norm")
    space = task.knob_space(2)
    codes: list[str] = []

    def measure(task, configs, phase, rounds):
        if phase != "confirm":
            codes.extend(space.code_id(c) for c in configs)
            assert all(space.canonical(c) == c for c in configs)
        return MeasureResult([1e-6 * (1 + len(codes) % 5) for _ in configs])

    search_kernel(task, measure, SearchOptions(trials=12, seed=0))
    assert len(codes) == len(set(codes)) == 12


def test_the_search_is_repeatable_for_a_seed():
    def run(seed: int) -> list[str]:
        order: list[str] = []

        def measure(task, configs, phase, rounds):
            order.extend(config_id(c) for c in configs)
            return MeasureResult([1e-6 * (1 + len(order) % 7) for _ in configs])

        search_kernel(_fake_task(20.0), measure, SearchOptions(trials=8, seed=seed))
        return order

    assert run(1) == run(1)
    assert run(1) != run(2)
