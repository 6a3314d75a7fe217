"""The autotuner: `kiln tune` searches each kernel's knobs and stores the winners.

- `kernels.py`: the kernels of a model worth tuning, their keys and share of model time;
- `search.py`: Optuna (seeded TPE) proposes, the learned cost model screens, the worker
  measures;
- `measure.py` / `worker.py`: measurement in an isolated process with a timeout;
- `dataset.py`: every measurement, kept for training the learned cost model;
- `model_check.py`: the model timed with the winners and without, before they are stored;
- `tuner.py`: the run as a whole (order, budget, progress, cache writes);
- `configs.py`: how a later compile reads the winners back (no measurement).

Names load on first use so that `compiler.tuner.configs` (used by every compile) does not
import Optuna or XGBoost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compiler.tuner.tuner import TuneOptions, TuneReport, tune_model

__all__ = ["TuneOptions", "TuneReport", "tune_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from compiler.tuner import tuner

        return getattr(tuner, name)
    raise AttributeError(f"module 'compiler.tuner' has no attribute {name!r}")
