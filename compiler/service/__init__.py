"""The autotuning cache service (`kiln serve`) and the client the compiler uses.

A record is the best measured configuration of one kernel for one target, stored under
the kernel's functional key (`ir.hashing.kernel_key`). Files: `app.py` (routes),
`db.py` (engine, schema, best-wins upsert), `models.py` (wire format), `config.py`
(settings), `client.py` (`CacheClient`, with its local SQLite fallback).

Importing this package imports neither FastAPI nor the database drivers; each file
imports what it needs.
"""

from __future__ import annotations
