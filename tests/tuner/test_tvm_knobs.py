"""backends/tvm/knobs.py and the search's proposals: only valid configurations, ever."""

from __future__ import annotations

import math
import random

import pytest

from backends.tvm.knobs import (
    KNOBS,
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


def test_the_table_declares_schedule_options_fields_with_their_defaults():
    assert {k.name for k in KNOBS} <= set(ScheduleOptions.__dataclass_fields__)
    assert schedule_options(default_config(8), 8) == ScheduleOptions()
    for knob in KNOBS:
        assert knob.default in knob.values


def test_invalid_configurations_are_refused():
    with pytest.raises(KnobError, match="tile"):
        canonical({"tile": 32})
    with pytest.raises(KnobError, match="chunks_per_thread=3"):
        canonical({"chunks_per_thread": 3})
    with pytest.raises(KnobError, match="num_threads=4"):
        canonical({"num_threads": 4}, max_threads=2)  # more threads than the build runs
    with pytest.raises(KnobError):
        canonical({"num_threads": True})


def test_knobs_of_a_serial_kernel_collapse_to_one_configuration():
    serial = [c for c in all_configs(2) if c["num_threads"] == 1]
    assert serial == [canonical({"num_threads": 1, "chunks_per_thread": 16}, 2)]
    configs = all_configs(2)
    assert configs[0] == default_config(2)
    parallel = math.prod(len(v) for name, v in knob_values(2).items() if name != "num_threads")
    assert len({config_id(c) for c in configs}) == len(configs) == 1 + parallel
    assert all(canonical(c, 2) == c for c in configs)


def _task(log2_work: float) -> KernelTask:
    return KernelTask(
        key="ab" * 32, label="t/kiln_group_0", ops="add", program=None,  # type: ignore[arg-type]
        features={"log2_work": log2_work, "roofline_us": 1.0}, count=1, roofline_s=1e-6, workload="t",
    )


@pytest.mark.parametrize("log2_work", [10.0, 20.0])  # 1024 iterations: most configs serial
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

    result = search_kernel(_task(log2_work), measure, SearchOptions(trials=10, seed=3))
    assert len(seen) == len(set(seen))  # nothing measured twice
    assert result.best_s is not None
    assert seen[0] == config_id(default_config(2))  # the baseline, measured as is
    # A threshold no block of 2^log2_work iterations can reach is the serial config:
    # it is measured once, as num_threads=1, never under another name.
    small = [c for c in all_configs(2) if stays_serial(c, 2 ** int(log2_work)) and c["num_threads"] > 1]
    assert not {config_id(c) for c in small} & set(seen[1:])
    effective = 1 + len(all_configs(2)) - 1 - len(small)  # the serial config + the rest
    assert len(seen) == min(10, effective + (config_id(default_config(2)) in map(config_id, small)))


def test_the_search_is_repeatable_for_a_seed():
    def run(seed: int) -> list[str]:
        order: list[str] = []

        def measure(task, configs, phase, rounds):
            order.extend(config_id(c) for c in configs)
            return MeasureResult([1e-6 * (1 + len(order) % 7) for _ in configs])

        search_kernel(_task(20.0), measure, SearchOptions(trials=8, seed=seed))
        return order

    assert run(1) == run(1)
    assert run(1) != run(2)
