"""The cache service's settings: one frozen object, built by `kiln serve` and passed down.

Nothing here reads the environment; the CLI entry does (see `compiler/commands/serve_cmd.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Request bodies larger than this get 413 before they are parsed. A record is a
# configuration of a few knobs plus metadata: 64 KiB is two orders of magnitude of room.
MAX_BODY_BYTES = 64 * 1024
# How long a SQLite writer waits for the lock before failing (ms); concurrent PUTs queue.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def user_cache_dir() -> Path:
    from platformdirs import user_cache_dir as platform_cache_dir

    return Path(platform_cache_dir("kiln", appauthor=False))


def default_db_url() -> str:
    """The service's own SQLite file under the user cache dir."""
    return f"sqlite:///{user_cache_dir() / 'service.sqlite'}"


def default_local_cache_path() -> Path:
    """The client's fallback cache, kept apart from a server's file on the same machine."""
    return user_cache_dir() / "local-cache.sqlite"


@dataclass(frozen=True)
class ServiceConfig:
    """What `kiln serve` was asked for; `token=None` leaves writes open."""

    db_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
