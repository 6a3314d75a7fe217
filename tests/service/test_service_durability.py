"""Durability of the SQLite-backed service: a restart and a `kill -9` lose no acknowledged write.

A write is acknowledged when its PUT got 200. After a kill -9 during a burst of writes
from several threads, every key must hold a latency no worse than the best acknowledged
one for it, and one that some client really sent (a write that committed just before the
kill may have had no time to be acknowledged: it may win, it must not be invented).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import httpx
from service_harness import AUTH, TOKEN, ServerProcess, key_of, record


def test_restart_and_kill_9_during_a_write_burst_lose_no_acknowledged_write(tmp_path):
    """One file, three server processes: a graceful restart, then a kill -9 mid-burst."""
    db_path = tmp_path / "cache.sqlite"
    server = ServerProcess(f"sqlite:///{db_path}", token=TOKEN, log_path=tmp_path / "log").start()
    early = [key_of(f"persist-{i}") for i in range(10)]
    for i, k in enumerate(early):
        assert (
            httpx.put(
                f"{server.url}/v1/records/{k}", json=record(0.01 * (i + 1)), headers=AUTH
            ).status_code
            == 200
        )
    server.stop()
    server.start()  # a fresh process on another port, same file
    for i, k in enumerate(early):
        assert httpx.get(f"{server.url}/v1/records/{k}").json()["latency_s"] == 0.01 * (i + 1)

    keys = [key_of(f"burst-{i}") for i in range(12)]
    acknowledged: dict[str, list[float]] = {k: [] for k in keys}
    attempted: dict[str, list[float]] = {k: [] for k in keys}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as http:
            while not stop.is_set():
                k, latency = rng.choice(keys), rng.uniform(1e-5, 1.0)
                with lock:
                    attempted[k].append(latency)
                try:
                    response = http.put(f"/v1/records/{k}", json=record(latency))
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    with lock:
                        acknowledged[k].append(latency)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while sum(map(len, acknowledged.values())) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()  # in the middle of the burst: writers are still sending
    stop.set()
    for t in threads:
        t.join(10)
    total = sum(map(len, acknowledged.values()))
    assert total >= 150, f"only {total} writes acknowledged before the kill"

    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for k in keys:
                if not acknowledged[k]:
                    continue
                stored = http.get(f"/v1/records/{k}")
                assert stored.status_code == 200, f"acknowledged writes to {k} were lost"
                latency = stored.json()["latency_s"]
                assert latency <= min(acknowledged[k])
                assert latency in attempted[k]
            count = http.get("/v1/stats").json()["records"] - len(early)
            assert (
                sum(1 for k in keys if acknowledged[k])
                <= count
                <= sum(1 for k in keys if attempted[k])
            )
    finally:
        server.stop()
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_durability_setting_is_in_force_on_the_service_connections(tmp_path):
    """The claim is "WAL with synchronous=FULL" (compiler/service/db.py): a kill -9 alone
    would pass with NORMAL too, so the setting itself is read back, from the running server
    (/v1/health asks one of its own connections) and from every connection of its pool."""
    from compiler.service import db

    db_path = tmp_path / "pragma.sqlite"
    with ServerProcess(f"sqlite:///{db_path}", token=TOKEN, log_path=tmp_path / "log") as server:
        health = httpx.get(f"{server.url}/v1/health").json()
        assert health["durability"] == {"journal_mode": "wal", "synchronous": "FULL"}
    engine = db.make_engine(f"sqlite:///{db_path}")
    held = [engine.connect() for _ in range(3)]  # three live connections: three connect events
    try:
        for connection in held:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        for connection in held:
            connection.close()
        engine.dispose()
    with sqlite3.connect(db_path) as raw:  # WAL is a property of the file, kept after the server
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
