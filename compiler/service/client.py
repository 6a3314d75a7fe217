"""`CacheClient`: how the compiler and the tuner read and write tuning records.

Compiling never blocks on the service. Every call to the server has a short timeout
(0.5 s to connect); when the server cannot be reached, the client answers from a local
SQLite cache (the server's schema and best-wins upsert, `db.py`) and leaves the server
alone for `retry_after_s`, so a model with a hundred kernels pays the timeout once, not
a hundred times. Every write also goes to the local cache, and every hit from the
server is copied there, so the local cache is what this machine knows when offline.

`source` says where the last answer came from: "server", "local" or "none" (a miss
everywhere). Environment variables are read only by `from_env`, called by the CLI.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError
from pydantic import ValidationError

from compiler.service import db
from compiler.service.config import default_local_cache_path
from compiler.service.models import KEY_PATTERN, RecordIn

CONNECT_TIMEOUT_S = 0.5
REQUEST_TIMEOUT_S = 2.0
RETRY_AFTER_S = 30.0


@dataclass(frozen=True)
class Record:
    """One measured configuration of a kernel: lower `latency_s` is better."""

    target: str
    config: dict[str, Any]
    latency_s: float
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Record:
        return cls(
            row["target"], dict(row["config"]), float(row["latency_s"]), dict(row.get("meta") or {})
        )


class CacheServiceError(RuntimeError):
    """The server answered, and refused (a bad token, a record it would not store)."""


class CacheClient:
    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        local_path: Path | str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        timeout_s: float = REQUEST_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.local_path = Path(local_path) if local_path is not None else default_local_cache_path()
        self.retry_after_s = retry_after_s
        self.source = "none"
        self._down_until = 0.0
        self._local: Any = None
        self._local_broken = False
        self._http = None
        if self.url:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._http = httpx.Client(
                base_url=self.url,
                headers=headers,
                timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
                trust_env=False,  # a proxy setting must not route a loopback or LAN cache
            )

    @classmethod
    def from_env(cls, url: str | None = None, **kwargs: Any) -> CacheClient:
        """`--cache URL` if given, else `KILN_CACHE`; `KILN_CACHE_TOKEN` for writes."""
        return cls(
            url or os.environ.get("KILN_CACHE") or None,
            token=os.environ.get("KILN_CACHE_TOKEN"),
            **kwargs,
        )

    # ---- reads and writes -------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        _check_key(key)
        if self._server_usable():
            try:
                response = self._http.get(f"/v1/records/{key}")  # type: ignore[union-attr]
            except httpx.HTTPError:
                self._mark_down()
            else:
                if response.status_code == 200:
                    try:
                        found = Record.from_row(response.json())
                    except (ValueError, KeyError, TypeError, AttributeError):
                        found = None  # not a kiln cache at that URL: treat it as down
                    if found is not None:
                        self._local_upsert(key, asdict(found))
                        self.source = "server"
                        return found
                    self._mark_down()
                elif response.status_code >= 500:
                    self._mark_down()
                elif response.status_code != 404:
                    raise CacheServiceError(_explain(response))
        row = self._local_call(db.get, key)
        self.source = "local" if row is not None else "none"
        return None if row is None else Record.from_row(row)

    def put(self, key: str, record: Record) -> None:
        """Record a measurement locally and on the server (when reachable); the best wins."""
        _check_key(key)
        try:  # the server's own validation, so the local cache holds nothing it would refuse
            body = RecordIn(**asdict(record)).model_dump()
        except ValidationError as err:
            raise ValueError(f"record for {key}: {err}") from None
        self._local_upsert(key, body)
        self.source = "local"
        if not self._server_usable():
            return
        try:
            response = self._http.put(f"/v1/records/{key}", json=body)  # type: ignore[union-attr]
        except httpx.HTTPError:
            self._mark_down()
            return
        if response.status_code == 200:
            self.source = "server"
        elif response.status_code >= 500:
            self._mark_down()
        else:
            raise CacheServiceError(_explain(response))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._local is not None:
            self._local.dispose()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -----------------------------------------------------------------

    def _server_usable(self) -> bool:
        return self._http is not None and time.monotonic() >= self._down_until

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.retry_after_s

    def _local_call(self, fn, *args: Any) -> Any:
        """`fn(engine, *args)` on the local cache; a broken one (read-only home, a full
        disk, a corrupt file) is reported once and then treated as empty."""
        if self._local_broken:
            return None
        try:
            if self._local is None:
                self._local = db.make_engine(f"sqlite:///{self.local_path}")
                db.create_schema(self._local)
            return fn(self._local, *args)
        except (SQLAlchemyError, OSError) as err:
            self._local_broken = True
            warnings.warn(
                f"kiln: local tuning cache {self.local_path} is unusable ({err}); "
                "continuing without it",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def _local_upsert(self, key: str, row: dict[str, Any]) -> None:
        self._local_call(db.upsert, key, row)


def _check_key(key: str) -> None:
    if not re.fullmatch(KEY_PATTERN, key):
        raise ValueError(
            f"cache key {key!r} is not a kernel key "
            "(64 lowercase hex digits, as ir.hashing.kernel_key makes)"
        )


def _explain(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:200]
    request = response.request
    return f"cache service {request.method} {request.url.path}: {response.status_code} {detail}"
