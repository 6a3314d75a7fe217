"""Memory mapping: buffer offsets in one arena (ILP, best-fit baseline) and memory tiers.

The pass class is `MapMemoryPass` (`map-memory`) in `pass_.py`; the ILP is in
`offsets_ilp.py`, the baseline in `bestfit.py`, lifetimes in `lifetimes.py`, the order
search in `reorder.py` and the tier choice in `tiers.py`.
"""

from __future__ import annotations

from passes.memory.pass_ import MapMemoryPass, MemoryOptionError, TierError, map_memory

__all__ = ["MapMemoryPass", "MemoryOptionError", "TierError", "map_memory"]
