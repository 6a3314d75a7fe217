"""A digest of Kiln's own sources, for cache keys.

A cached build is only as fresh as the code that made it. Keying caches by a version
constant alone relies on someone bumping it with every lowering change, and that was
forgotten once: the zoo cnn's stem kept running an old 125 us kernel out of the artifact
cache after its lowering had changed to a 25 us one, in every benchmark run that day. A
digest of the source files cannot be forgotten; it costs a read of ~1 MB once per process.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILN_PACKAGES = ("passes", "ir", "cost_models", "backends")


@cache
def source_digest(packages: tuple[str, ...] = KILN_PACKAGES) -> str:
    """sha256 over the path and bytes of every `.py` file in `packages` (under the repo root)."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
