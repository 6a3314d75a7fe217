"""`CacheClient`: how the compiler and the tuner read and write tuning records.

Compiling never blocks on the service. Every call to the server has a short timeout
(0.5 s to connect); when the server cannot be reached, the client answers from a local
SQLite cache (the server's schema and best-wins upsert, `db.py`) and leaves the server
alone for `retry_after_s`, so a model with a hundred kernels pays the timeout once, not
a hundred times. Every write also goes to the local cache, and every hit from the
server is copied there, so the local cache is what this machine knows when offline.

`source` says where the last answer came from: "server", "local" or "none" (a miss
everywhere). Environment variables are read only by `from_env`, called by the CLI.

Falling back is never silent: the first time the server is found unusable the client
says so once (`on_fallback`, one line; the CLI prints it on stderr). A `--cache` value
that is not an http(s) URL is refused when the client is made (`CacheURLError`), and
`preflight` makes one request before any work: `kiln tune` learns that its token is
missing before measuring for an hour, not from a 401 at the end.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

    def measured_for(self, full_target: str) -> bool:
        """Whether this record was measured for `full_target` (TVM's whole target string).
        Records name their target as users type it (`tvm`, so `GET /v1/records?target=tvm`
        lists them) and keep the full string in `meta["target"]`; older records stored the
        full string as the target."""
        return self.target == full_target or self.meta.get("target") == full_target


class CacheServiceError(RuntimeError):
    """The server answered, and refused (a bad token, a record it would not store)."""


class CacheURLError(ValueError):
    """`--cache` / `KILN_CACHE` is not an http(s) URL."""


def check_url(url: str) -> str:
    """The URL without a trailing slash, or CacheURLError naming what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CacheURLError(
            f"tuning cache {url!r} (--cache or KILN_CACHE) is not an http(s) URL: "
            "give the address `kiln serve` prints, e.g. http://127.0.0.1:8000"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise CacheURLError(f"tuning cache {url!r} has an invalid port") from None
    return url.strip().rstrip("/")


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
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.url = check_url(url) if url else None
        self.local_path = Path(local_path) if local_path is not None else default_local_cache_path()
        self.retry_after_s = retry_after_s
        self.source = "none"
        self._down_until = 0.0
        self._local: Any = None
        self._local_broken = False
        self._http = None
        self._on_fallback = on_fallback
        self.fallback: str | None = None  # why the server was last found unusable
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
            except httpx.HTTPError as err:
                self._mark_down(_unreachable(err))
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
                    self._mark_down("does not answer like a kiln cache service")
                elif response.status_code >= 500:
                    self._mark_down(f"answered {response.status_code}")
                elif response.status_code == 404:
                    if not _is_kiln_miss(response):  # a proxy or another server answering 404
                        self._mark_down("does not answer like a kiln cache service (a 404 without its body)")
                else:
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
        except httpx.HTTPError as err:
            self._mark_down(_unreachable(err))
            return
        if response.status_code == 200:
            self.source = "server"
        elif response.status_code >= 500:
            self._mark_down(f"answered {response.status_code}")
        else:
            raise CacheServiceError(_explain(response))

    def preflight(self, write: bool = False) -> bool:
        """One request before any work: is the server there, and (`write`) will it take
        this client's writes? True when it is usable; False after saying, once, that the
        local cache stands in; CacheServiceError when the server refuses the token."""
        if self._http is None:
            return False
        path = "/v1/auth" if write else "/v1/health"
        try:
            response = self._http.get(path)
        except httpx.HTTPError as err:
            self._mark_down(_unreachable(err))
            return False
        if response.status_code == 401:
            raise CacheServiceError(
                f"cache service {self.url} refuses writes without its token (401): set "
                "KILN_CACHE_TOKEN to the token given to `kiln serve --token`"
            )
        try:
            kiln_like = response.status_code == 200 and isinstance(response.json(), dict)
        except ValueError:
            kiln_like = False
        if not kiln_like:
            self._mark_down(f"does not answer like a kiln cache service ({path}: {response.status_code})")
            return False
        return True

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

    def _mark_down(self, reason: str) -> None:
        self._down_until = time.monotonic() + self.retry_after_s
        if self.fallback is None:  # said once per client: a hundred kernels, one line
            message = (f"tuning cache {self.url} {reason}; using the local cache {self.local_path} "
                       f"(retrying the server every {self.retry_after_s:g} s)")
            if self._on_fallback is not None:
                self._on_fallback(message)
            else:
                warnings.warn(f"kiln: {message}", RuntimeWarning, stacklevel=3)
        self.fallback = reason

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


def _is_kiln_miss(response: httpx.Response) -> bool:
    """A kiln service's 404 carries `{"detail": "no record for key ..."}`."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


def _unreachable(err: httpx.HTTPError) -> str:
    kind = "timed out" if isinstance(err, httpx.TimeoutException) else "is unreachable"
    return f"{kind} ({type(err).__name__})"


def _explain(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:200]
    request = response.request
    return f"cache service {request.method} {request.url.path}: {response.status_code} {detail}"
