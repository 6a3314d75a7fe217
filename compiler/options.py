"""CompileOptions: everything a compile depends on, typed and frozen, passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CompileOptions:
    target: str = "tvm"
    pipeline: str | None = None  # None: the backend's own pipeline
    strict: bool = False  # fail instead of falling back to eager for unsupported ops
    verify_each_pass: bool = False
    out_dir: Path | None = None  # write IR before/after passes and build artifacts here
    dump_ir: bool = False  # with out_dir: IR after every pass
    cache_dir: Path | None = None  # artifact cache; None uses the user cache dir
    use_cache: bool = True
    num_threads: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Tuned kernel configs (`kiln tune`): read from this cache, never measured. A URL is
    # the cache service (falling back to the local cache), a `CacheClient` is used as is,
    # None is the local cache alone. The CLI and torch.compile entry resolve KILN_CACHE.
    tuning_cache: Any = None
    use_tuned: bool = True
    report: Path | None = None  # write the HTML report of every decision here (compiler/report)
    on_stage: Any = None  # called with each stage's name (capture, passes, build): kiln compile's progress line

    @staticmethod
    def from_mapping(options: dict | None) -> CompileOptions:
        """Options given as a dict (torch.compile's `options=`); unknown keys are an error."""
        options = dict(options or {})
        known = {f for f in CompileOptions.__dataclass_fields__}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown kiln option(s) {unknown}; known: {sorted(known)}")
        for key in ("out_dir", "cache_dir", "report"):
            if options.get(key) is not None:
                options[key] = Path(options[key])
        return CompileOptions(**options)
