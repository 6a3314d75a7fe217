"""Where a build's tuned configurations come from (`backends.base.KernelConfigs`).

`CacheConfigs` is what `kiln compile` uses: the best record of each kernel in the
autotuning cache (the service, or the local SQLite cache when it is unreachable), read,
never measured. `UniformConfigs` is what the measurement worker uses: one candidate
configuration for the one kernel it builds.
"""

from __future__ import annotations

import warnings
from typing import Any


class CacheConfigs:
    """Tuned configs from the autotuning cache; records for another target are ignored.

    `source` is a `CacheClient` (used as is), a service URL, or None (the local cache
    alone); a client made here is closed by `close`. Nothing is opened until the first
    lookup, so a compile with no TIR kernel never touches the cache.
    """

    def __init__(self, source: Any = None) -> None:
        self._own = source is None or isinstance(source, str)
        self._url = source if isinstance(source, str) else None
        self._client = None if self._own else source
        self.lookups = 0
        self.hits = 0
        self._warned = False

    @property
    def client(self) -> Any:
        if self._client is None:
            from compiler.service.client import CacheClient

            self._client = CacheClient(self._url)
        return self._client

    def close(self) -> None:
        if self._own and self._client is not None:
            self._client.close()
            self._client = None

    def config_for(self, key: str, target: str) -> dict[str, Any] | None:
        from compiler.service.client import CacheServiceError

        self.lookups += 1
        try:
            record = self.client.get(key)
        except (CacheServiceError, ValueError) as err:  # compiling never fails on the cache
            if not self._warned:
                warnings.warn(f"kiln: tuning cache unusable, building untuned: {err}", stacklevel=2)
                self._warned = True
            return None
        if record is None or not record.measured_for(target):
            return None
        self.hits += 1
        return dict(record.config)


class UniformConfigs:
    """The same configuration for every kernel (the worker builds one kernel at a time)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)

    def config_for(self, key: str, target: str) -> dict[str, Any] | None:
        return dict(self.config)
