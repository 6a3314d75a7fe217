"""The TVM target's kiln pass pipeline (the target owns its pipeline, as in TVM Relax)."""

from __future__ import annotations


def kiln_pipeline() -> str:
    from passes import DEFAULT_PIPELINE

    return DEFAULT_PIPELINE
