"""cost_models/learned.py: training, held-out ranking, save/load; and the metrics themselves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from backends.tvm.knobs import all_configs
from cost_models.features import FEATURE_NAMES, KERNEL_FEATURES
from cost_models.learned import (
    LearnedCostModel,
    ModelFormatError,
    Sample,
    evaluate,
    ranking_metrics,
    spearman,
)


def synthetic_kernel(rng: np.random.Generator) -> dict[str, float]:
    kernel = {name: float(rng.integers(0, 4)) for name in KERNEL_FEATURES}
    kernel["log2_work"] = float(rng.uniform(13, 22))
    kernel["log2_out_elems"] = float(rng.uniform(11, kernel["log2_work"]))
    kernel["roofline_us"] = 2.0 ** kernel["log2_work"] * 1e-4
    return kernel


def synthetic_latency(kernel: dict[str, float], config: dict[str, int], rng=None) -> float:
    """Known structure, the CPU rules' in miniature: a kernel of two blocks (sizes
    `log2_work` and `log2_out_elems`), each parallel when it reaches the threshold;
    parallel halves a block's time but costs a fork and a little per chunk, and more
    chunks balance the load better. Plus 1% noise."""
    threads, chunks = config["num_threads"], config["num_threads"] * config["chunks_per_thread"]
    threshold = config.get("min_parallel_work", config.get("min_parallel_elems"))
    t = 0.0
    for size in (2.0 ** kernel["log2_work"], 2.0 ** kernel["log2_out_elems"]):
        if threads > 1 and size >= threshold:
            t += size * 1e-9 / 2 * (1 + 1 / chunks) + 3e-6 + 1e-7 * chunks
        else:
            t += size * 1e-9
    return t * float(rng.lognormal(0, 0.01)) if rng is not None else t


def synthetic_samples(kernels: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(kernels):
        kernel = synthetic_kernel(rng)
        for config in all_configs(2):
            out.append(Sample(f"k{seed}-{k}", kernel, config, synthetic_latency(kernel, config, rng), f"w{k % 4}"))
    return out


def test_learns_a_known_structure_and_ranks_held_out_kernels():
    model = LearnedCostModel.fit(synthetic_samples(40, seed=1), seed=0)
    held_out = synthetic_samples(12, seed=2)
    groups = {}
    for s in held_out:
        groups.setdefault(s.group, []).append(s)
    measured, truth = [], []
    for members in groups.values():
        scores = model.scores(members[0].kernel, [s.config for s in members])
        measured.append((list(-scores), [s.latency_s for s in members]))
        truth.append((list(-scores), [synthetic_latency(s.kernel, s.config) for s in members]))
    against_truth = ranking_metrics(truth)  # the structure, without the noise
    assert against_truth["kernels"] == 12
    assert against_truth["spearman"] > 0.8, against_truth
    assert against_truth["top5_recall"] > 0.5, against_truth
    assert ranking_metrics(measured)["spearman"] > 0.7  # 1% noise reorders near-ties


def test_evaluate_reports_held_out_metrics_and_the_roofline_blind_spot():
    report = evaluate(synthetic_samples(20, seed=3), folds=4, rounds=60)
    assert report["learned"]["spearman"] > 0.7
    roof = report["roofline"]
    assert math.isnan(roof["spearman"]) and roof["spearman_defined"] == 0  # constant per kernel
    assert roof["top1_recall"] == pytest.approx(1 / len(all_configs(2)))  # a random pick
    assert report["learned"]["top1_recall"] > roof["top1_recall"]
    by_workload = evaluate(synthetic_samples(20, seed=3), folds=4, by="workload", rounds=60)
    assert by_workload["split"] == "4-fold by workload"


def test_save_and_load_round_trip(tmp_path):
    samples = synthetic_samples(8, seed=4)
    model = LearnedCostModel.fit(samples, seed=0, rounds=30)
    path = model.save(tmp_path / "model.json")
    loaded = LearnedCostModel.load(path)
    kernel, configs = samples[0].kernel, [s.config for s in samples[:26]]
    assert np.allclose(model.scores(kernel, configs), loaded.scores(kernel, configs))
    assert loaded.meta["features"] == list(FEATURE_NAMES) and loaded.meta["kernels"] == 8
    meta = path.with_suffix(".meta.json")
    stale = json.loads(meta.read_text())
    stale["features"] = stale["features"][:-1]
    meta.write_text(json.dumps(stale))
    with pytest.raises(ModelFormatError, match="retrain"):
        LearnedCostModel.load(path)


def test_ranking_metrics_on_hand_made_cases():
    perfect = ranking_metrics([([1, 2, 3, 4], [10, 20, 30, 40])])
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["top1_recall"] == 1.0
    reversed_ = ranking_metrics([([4, 3, 2, 1, 0, -1], [1, 2, 3, 4, 5, 6])])
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["top1_recall"] == 0.0 and reversed_["top5_recall"] == 0.0
    constant = ranking_metrics([([7, 7, 7, 7], [4, 3, 2, 1])])
    assert constant["top1_recall"] == pytest.approx(0.25) and constant["top5_recall"] == 1.0
    assert ranking_metrics([([1, 2], [2, 1])])["kernels"] == 0  # too few configs to judge
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_training_needs_two_configurations_of_a_kernel():
    one = synthetic_samples(1, seed=5)[:1]
    with pytest.raises(ValueError, match="two or more"):
        LearnedCostModel.fit(one)
