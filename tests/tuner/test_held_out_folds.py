"""`cost_models.learned.evaluate`: the fold being judged never reaches the model's training data.

The held-out Spearman and top-k figures in the tuning report mean something only if the
model never saw the kernels it is judged on. A spy replaces training and prediction: it
remembers what each fold's model was trained on, and every prediction checks that the
kernel it is asked about (by key, by what the model sees of it, and by the workload it was
measured in) is not among them.
"""

from __future__ import annotations

import numpy as np
import pytest

from cost_models import learned
from cost_models.learned import Sample, evaluate, kernel_signature

CONFIGS = [{"num_threads": t, "chunks_per_thread": c} for t in (1, 2) for c in (1, 2)]


def kernel(i: int) -> dict[str, float]:
    return {"log2_work": 10.0 + i, "roofline_us": float(i + 1)}


def dataset() -> list[Sample]:
    """12 kernels over 4 workloads, with the traps a careless split falls into: k10 has the
    features of k0 under another key (a lookalike, in another workload), and k11 was
    measured in two workloads (w1 and w3)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(10):
        for c in CONFIGS:
            out.append(Sample(f"k{k}", kernel(k), c, float(rng.uniform(1, 2)), f"w{k % 4}"))
    for c in CONFIGS:
        out.append(Sample("k10", kernel(0), c, float(rng.uniform(1, 2)), "w2"))
    for j, c in enumerate(CONFIGS):
        out.append(Sample("k11", kernel(11), c, float(rng.uniform(1, 2)), "w1" if j % 2 else "w3"))
    return out


class Spy:
    fits: list[Spy] = []
    checked = 0

    def __init__(self, train: list[Sample]) -> None:
        self.groups = {s.group for s in train}
        self.signatures = {kernel_signature(s.kernel) for s in train}
        self.workloads = {s.workload for s in train}
        self.rows = {(kernel_signature(s.kernel), tuple(sorted(s.config.items()))) for s in train}

    @classmethod
    def fit(cls, samples, seed=0, rounds=0, params=None) -> Spy:
        spy = cls(list(samples))
        cls.fits.append(spy)
        return spy

    def scores(self, kernel, configs):
        held = [s for s in SAMPLES if s.kernel is kernel]
        assert held, "asked about a kernel that is not in the data"
        group = held[0].group
        assert group not in self.groups, f"{group} is judged by a model trained on it"
        assert kernel_signature(kernel) not in self.signatures, f"{group}: a lookalike was in training"
        for config in configs:
            assert (kernel_signature(kernel), tuple(sorted(config.items()))) not in self.rows
        if self.by == "workload":  # the model it is judged under (its first record's) was held out
            assert held[0].workload not in self.workloads, f"{group}: {held[0].workload} was in training"
        Spy.checked += 1
        return np.zeros(len(configs))


SAMPLES = dataset()


@pytest.mark.parametrize("by, folds", [("kernel", 5), ("kernel", 12), ("workload", 4), ("workload", 2)])
def test_no_fold_is_judged_by_a_model_that_saw_it(monkeypatch, by, folds):
    Spy.fits, Spy.checked, Spy.by = [], 0, by
    monkeypatch.setattr(learned.LearnedCostModel, "fit", Spy.fit)
    result = evaluate(SAMPLES, folds=folds, by=by)
    assert Spy.fits, "no fold was trained"
    judged = result["learned"]["kernels"]
    assert Spy.checked == judged > 0
    if folds in (4, 12):  # one unit per fold: k0 and k10 (and by workload k11) are apart
        assert result["withheld_lookalikes"] >= 1
    if by == "kernel":
        assert judged == 12  # every kernel judged once, in its own fold


def test_every_fold_still_trains_on_what_it_may(monkeypatch):
    """Withholding is not overdone: by kernel, a fold's model trains on every other kernel
    except the held-out ones' lookalikes."""
    Spy.fits, Spy.checked, Spy.by = [], 0, "kernel"
    monkeypatch.setattr(learned.LearnedCostModel, "fit", Spy.fit)
    evaluate(SAMPLES, folds=12, by="kernel")
    sizes = sorted(len(spy.groups) for spy in Spy.fits)
    assert sizes == [10, 10] + [11] * 10  # k0 and k10 each lose their lookalike


def test_by_workload_withholds_kernels_measured_in_a_held_out_model(monkeypatch):
    """k11 was measured in w1 and w3: while w1 is held out, k11 trains nothing."""
    Spy.fits, Spy.checked, Spy.by = [], 0, "workload"
    monkeypatch.setattr(learned.LearnedCostModel, "fit", Spy.fit)
    evaluate(SAMPLES, folds=4, by="workload")
    for spy in Spy.fits:
        if "w1" not in spy.workloads:
            assert "k11" not in spy.groups
