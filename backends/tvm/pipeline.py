"""The TVM target's kiln pass pipeline (the target owns its pipeline, as in TVM Relax)."""

from __future__ import annotations


def kiln_pipeline() -> str:
    """Clean up, then fuse with TVM's capabilities: contractions run as library calls
    (no epilogue fusion into them); several reductions may share a TIR kernel. Last,
    `map-memory` places the intermediates in one arena (`arena.py` builds with it)."""
    from passes import DEFAULT_PIPELINE

    return f"{DEFAULT_PIPELINE},fuse{{fuse-contractions=false multi-reduction=true}},map-memory"
