"""The learned cost model: gradient-boosted trees that rank configurations of a kernel.

What the tuner needs from a cost model is an order: of the candidates Optuna proposes for
one kernel, which few are worth measuring. So the model is a ranker (XGBoost,
`rank:pairwise`, one query group per kernel), trained on measured records (features of
the kernel and its configuration, `features.py`; label: the configuration's latency rank
within its kernel) and judged by ranking on kernels it never saw: the mean over held-out
kernels of Spearman's correlation between predicted and measured order, and top-1 / top-5
recall (is the measured best among the model's first 1 / 5?).

The roofline model is the baseline, and it has a blind spot by construction: it costs a
kernel's FLOPs and bytes, which no schedule knob changes, so it gives every configuration
of a kernel the same time. Its within-kernel Spearman is undefined (a constant), and its
top-k recall is what picking at random achieves; `evaluate` reports exactly that.

The model is saved as XGBoost's JSON next to a metadata file (format version, feature
names, what it was trained on, its held-out metrics); `load` refuses a model whose
version or feature list differs from this code's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cost_models.features import FEATURE_NAMES, FEATURES_VERSION, feature_row, feature_rows

LEARNED_VERSION = "1"
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "rank:pairwise",
    "eta": 0.1,
    "max_depth": 5,
    "min_child_weight": 1.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "lambda": 1.0,
    "nthread": 2,
}
ROUNDS = 150


class ModelFormatError(ValueError):
    """A saved model this code cannot use (another version or feature list)."""


@dataclass(frozen=True)
class Sample:
    """One measured configuration: `group` names its kernel (the kernel key)."""

    group: str
    kernel: Mapping[str, float]
    config: Mapping[str, Any]
    latency_s: float
    workload: str = ""  # the model it came from, for leave-one-workload-out evaluation


@dataclass
class LearnedCostModel:
    booster: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, samples: Sequence[Sample], seed: int = 0, rounds: int = ROUNDS,
        params: Mapping[str, Any] | None = None,
    ) -> LearnedCostModel:
        import xgboost as xgb

        groups = _grouped(samples)
        if not groups:
            raise ValueError("no kernel has two or more measured configurations to rank")
        rows, labels, qids = [], [], []
        for qid, members in enumerate(groups.values()):
            for sample, label in zip(members, _relevance([s.latency_s for s in members])):
                rows.append(feature_row(sample.kernel, sample.config))
                labels.append(label)
                qids.append(qid)
        dtrain = xgb.DMatrix(np.array(rows), label=np.array(labels), qid=np.array(qids),
                             feature_names=list(FEATURE_NAMES))
        booster = xgb.train({**DEFAULT_PARAMS, **(params or {}), "seed": seed}, dtrain, rounds)
        meta = {
            "version": LEARNED_VERSION,
            "features_version": FEATURES_VERSION,
            "features": list(FEATURE_NAMES),
            "objective": "rank:pairwise",
            "kernels": len(groups),
            "samples": len(rows),
        }
        return cls(booster, meta)

    def scores(self, kernel: Mapping[str, float], configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Higher is predicted faster."""
        import xgboost as xgb

        if not configs:
            return np.zeros(0)
        matrix = xgb.DMatrix(np.array(feature_rows(kernel, configs)), feature_names=list(FEATURE_NAMES))
        return self.booster.predict(matrix)

    def rank(self, kernel: Mapping[str, float], configs: Sequence[Mapping[str, Any]]) -> list[int]:
        """Indices of `configs`, predicted fastest first (stable for ties)."""
        scores = self.scores(kernel, configs)
        return sorted(range(len(configs)), key=lambda i: -scores[i])

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path))
        _meta_path(path).write_text(json.dumps(self.meta, indent=1))
        return path

    @classmethod
    def load(cls, path: Path | str) -> LearnedCostModel:
        import xgboost as xgb

        path = Path(path)
        try:
            meta = json.loads(_meta_path(path).read_text())
        except (OSError, ValueError) as err:
            raise ModelFormatError(f"{path}: no readable metadata ({err})") from None
        if meta.get("version") != LEARNED_VERSION or meta.get("features") != list(FEATURE_NAMES) \
                or meta.get("features_version") != FEATURES_VERSION:
            raise ModelFormatError(
                f"{path}: model version {meta.get('version')} with features "
                f"v{meta.get('features_version')}; this Kiln needs v{LEARNED_VERSION} with features "
                f"v{FEATURES_VERSION} (retrain with `kiln tune --train-cost-model`)"
            )
        booster = xgb.Booster()
        booster.load_model(str(path))
        return cls(booster, meta)


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".meta.json")


def _grouped(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    return {g: m for g, m in groups.items() if len(m) >= 2}


# Configurations within this factor of each other get one relevance grade: on a shared
# 2-core machine a repeated measurement differs by ~5% at the median, so finer grades would
# train the ranker on noise (pairs whose order a re-measurement flips).
GRADE_STEP = 1.1
MAX_GRADE = 31


def _relevance(latencies: Sequence[float]) -> list[int]:
    """Integer relevance, higher for faster: MAX_GRADE for the fastest, one grade less per
    factor GRADE_STEP slower."""
    lat = np.asarray(latencies, dtype=float)
    slower = np.floor(np.log(lat / lat.min()) / math.log(GRADE_STEP) + 1e-9).astype(int)
    return [int(max(0, MAX_GRADE - s)) for s in slower]


# ---- judging a ranking ------------------------------------------------------------------


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    if len(ra) < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of their positions (as Spearman's rho needs)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def ranking_metrics(
    groups: Sequence[tuple[Sequence[float], Sequence[float]]], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Mean Spearman and top-k recall over kernels, each given as (predicted cost, measured).

    Lower predicted cost means predicted faster. Ties in the prediction count as a random
    pick among the tied (the expected recall), which is how a constant predictor scores.
    Kernels with fewer than 3 measured configurations are skipped (no order to judge).
    """
    rhos, recalls = [], {k: [] for k in ks}
    for predicted, measured in groups:
        if len(measured) < 3:
            continue
        rhos.append(spearman(predicted, measured))
        best = int(np.argmin(measured))
        for k in ks:
            recalls[k].append(_expected_recall(np.asarray(predicted, dtype=float), best, k))
    defined = [r for r in rhos if not math.isnan(r)]
    out = {
        "kernels": len(rhos),
        "spearman": float(np.mean(defined)) if defined else math.nan,
        "spearman_defined": len(defined),
    }
    for k in ks:
        out[f"top{k}_recall"] = float(np.mean(recalls[k])) if recalls[k] else math.nan
    return out


def _expected_recall(predicted: np.ndarray, best: int, k: int) -> float:
    """P(the measured best is among the k lowest predictions), ties broken at random."""
    value = predicted[best]
    better = int(np.sum(predicted < value))
    tied = int(np.sum(predicted == value))
    if better >= k:
        return 0.0
    return min(1.0, (k - better) / tied)


def evaluate(
    samples: Sequence[Sample], folds: int = 5, seed: int = 0, by: str = "kernel",
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """Held-out ranking quality of the learned model, against the roofline model.

    Kernels (or, with `by="workload"`, whole models) are split into `folds`; each fold is
    ranked by a model trained on the others. Nothing of the held-out fold reaches training
    (`_training_for`): not its kernels, not a kernel the model cannot tell from one of
    them (the same features under another key), and by workload not any record measured
    in a held-out model. The roofline prediction of a configuration is its kernel's
    roofline time (the `roofline_us` feature): the same for every config.
    """
    groups = _grouped(samples)
    if by == "workload":
        units = sorted({members[0].workload for members in groups.values()})
        unit_of = {g: members[0].workload for g, members in groups.items()}
    else:
        units = sorted(groups)
        unit_of = {g: g for g in groups}
    rng = np.random.default_rng(seed)
    shuffled = list(rng.permutation(units))
    n_folds = max(2, min(folds, len(shuffled)))
    fold_of = {u: i % n_folds for i, u in enumerate(shuffled)}
    learned, roofline = [], []
    withheld = 0
    for fold in range(n_folds):
        test = {g: m for g, m in groups.items() if fold_of[unit_of[g]] == fold}
        held = {u for u in units if fold_of[u] == fold}
        train, dropped = _training_for(groups, test, held if by == "workload" else set())
        withheld += dropped
        if not train or not test:
            continue
        model = LearnedCostModel.fit(train, seed=seed, rounds=rounds)
        for members in test.values():
            measured = [s.latency_s for s in members]
            scores = model.scores(members[0].kernel, [s.config for s in members])
            learned.append((list(-scores), measured))
            roofline.append(([s.kernel["roofline_us"] for s in members], measured))
    return {
        "split": f"{n_folds}-fold by {by}",
        "learned": ranking_metrics(learned),
        "roofline": ranking_metrics(roofline),
        "pooled_roofline_spearman": _pooled_roofline(samples),
        "withheld_lookalikes": withheld,
    }


def kernel_signature(kernel: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """What the model sees of a kernel: two kernels with one signature are one to it."""
    return tuple(sorted((k, float(v)) for k, v in kernel.items()))


def _training_for(
    groups: Mapping[str, list[Sample]], test: Mapping[str, list[Sample]], held_workloads: set[str],
) -> tuple[list[Sample], int]:
    """The samples a fold may train on, and how many other kernels were withheld because
    the model could not tell them from a held-out one (or, by workload, because they hold
    records measured in a held-out model)."""
    seen = {kernel_signature(m[0].kernel) for m in test.values()}
    train: list[Sample] = []
    dropped = 0
    for g, members in groups.items():
        if g in test:
            continue
        if kernel_signature(members[0].kernel) in seen or any(s.workload in held_workloads for s in members):
            dropped += 1
            continue
        train.extend(members)
    return train, dropped


def _pooled_roofline(samples: Sequence[Sample]) -> float:
    """Across kernels the roofline does order things: Spearman over every record, pooled."""
    return spearman([s.kernel["roofline_us"] for s in samples], [s.latency_s for s in samples])
