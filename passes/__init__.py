"""Kiln's passes: each an xDSL `ModulePass` with a kebab-case name, run from pipeline text.

Public surface: `parse_pipeline`, `run_pipeline`, `register_pass`, `known_passes`,
`DEFAULT_PIPELINE`, `PassTiming` and the pipeline errors. Pass modules are imported
lazily by the registry (see `passes.registry.BUILTIN_PASS_MODULES`), so importing this
package stays cheap and never imports a solver.
"""

from __future__ import annotations

from passes.pipeline import PassTiming, PassVerificationError, format_timings, run_pipeline
from passes.registry import (
    DEFAULT_PIPELINE,
    PassOptionError,
    PipelineError,
    UnknownPassError,
    get_pass_class,
    known_passes,
    parse_pipeline,
    register_pass,
)

__all__ = [
    "DEFAULT_PIPELINE",
    "PassOptionError",
    "PassTiming",
    "PassVerificationError",
    "PipelineError",
    "UnknownPassError",
    "format_timings",
    "get_pass_class",
    "known_passes",
    "parse_pipeline",
    "register_pass",
    "run_pipeline",
]
