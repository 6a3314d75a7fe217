"""Storage of tuning records: the engine, the schema and the best-wins upsert.

One table, one row per key holding the best record seen. The server and the client's
local fallback cache both use this file, so they share one schema and one upsert.

Best-wins with no lost update is a single conditional upsert,

    INSERT ... ON CONFLICT (key) DO UPDATE SET ... WHERE excluded.latency_s < records.latency_s

which SQLite and PostgreSQL both execute atomically: under PostgreSQL the conflicting row
is locked and the WHERE sees its latest committed version; under SQLite writers are
serialized by the database lock (`BEGIN IMMEDIATE`, so a writer queues on the busy
timeout instead of failing on a stale snapshot). No read-modify-write happens in Python.

SQLite durability: WAL mode with `synchronous=FULL`. A PUT is acknowledged only after
its transaction has committed, and with FULL the commit fsyncs the WAL first. A `kill -9`
of the server could not lose it even with NORMAL (the WAL frames were already written
to the OS); FULL also keeps it through an OS crash or power loss, at one fsync per write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url

from compiler.service.config import SQLITE_BUSY_TIMEOUT_MS

metadata = MetaData()

records = Table(
    "records",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("target", String(256), nullable=False, index=True),
    Column("config", JSON, nullable=False),
    Column("latency_s", Float, nullable=False),
    Column("meta", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

COLUMNS = ("key", "target", "config", "latency_s", "meta", "created_at", "updated_at")


class UnsupportedDatabase(ValueError):
    """A `--db` URL that is neither SQLite nor PostgreSQL, or that does not parse."""


def make_engine(url: str) -> Engine:
    """An engine for `sqlite:///path` (WAL, FULL sync) or `postgresql://...` (psycopg 3)."""
    try:
        parsed = make_url(url)
    except Exception as err:  # sqlalchemy raises ArgumentError with the URL in it
        raise UnsupportedDatabase(f"cannot parse database URL {url!r}: {err}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_size=8, max_overflow=8, pool_pre_ping=True)
    raise UnsupportedDatabase(
        f"database {url!r}: kiln serve supports sqlite:/// and postgresql:// URLs"
    )


def _sqlite_engine(parsed) -> Engine:
    database = parsed.database
    if not database or database == ":memory:":
        raise UnsupportedDatabase(
            "an in-memory SQLite database would not outlive the server; give a file"
        )
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        # SQLAlchemy, not the sqlite3 module, decides where transactions begin (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Writers take the write lock up front so they wait on busy_timeout rather than
        # fail when another writer commits between their read and their write.
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        connection = connection.execution_options(write=True)
        with connection.begin():
            yield connection


def upsert(
    engine: Engine, key: str, record: dict[str, Any], now: float | None = None
) -> tuple[bool, dict[str, Any]]:
    """Store `record` under `key` unless a faster one is there; (improved, best record now).

    `record` has `target`, `config`, `latency_s` and `meta`, already validated.
    """
    now = time.time() if now is None else now
    insert = _dialect_insert(engine)
    values = {
        "key": key,
        "target": record["target"],
        "config": record["config"],
        "latency_s": float(record["latency_s"]),
        "meta": record.get("meta", {}),
        "created_at": now,
        "updated_at": now,
    }
    stmt = insert(records).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[records.c.key],
        set_={c: stmt.excluded[c] for c in ("target", "config", "latency_s", "meta", "updated_at")},
        where=stmt.excluded.latency_s < records.c.latency_s,
    ).returning(*records.c)
    with write_transaction(engine) as connection:
        stored = connection.execute(stmt).mappings().first()
        if stored is not None:
            return True, dict(stored)
        best = connection.execute(select(records).where(records.c.key == key)).mappings().one()
        return False, dict(best)


def _dialect_insert(engine: Engine):
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert


def get(engine: Engine, key: str) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(select(records).where(records.c.key == key)).mappings().first()
    return None if row is None else dict(row)


def list_records(engine: Engine, target: str | None, limit: int) -> list[dict[str, Any]]:
    query = select(records).order_by(records.c.updated_at.desc(), records.c.key).limit(limit)
    if target is not None:
        query = query.where(records.c.target == target)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def count_by_target(engine: Engine) -> dict[str, int]:
    query = select(records.c.target, func.count()).group_by(records.c.target)
    with engine.connect() as connection:
        return {target: int(n) for target, n in connection.execute(query)}


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


SQLITE_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def durability(engine: Engine) -> dict[str, str]:
    """The settings an acknowledged write's durability rests on, read back from a live
    connection of `engine` (what is in force, not what the code meant to set)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            sync = connection.exec_driver_sql("PRAGMA synchronous").scalar()
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            return {"journal_mode": str(mode), "synchronous": SQLITE_SYNCHRONOUS.get(sync, str(sync))}
        commit = connection.exec_driver_sql("SHOW synchronous_commit").scalar()
        fsync = connection.exec_driver_sql("SHOW fsync").scalar()
        return {"synchronous_commit": str(commit), "fsync": str(fsync)}
