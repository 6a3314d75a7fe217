"""`python -m benchmarks` runs the benchmark runner, as `python -m benchmarks.run` does."""

from __future__ import annotations

import sys

from benchmarks.run import main

sys.exit(main())
