"""The cache service over a real PostgreSQL server that the test starts itself.

Skipped, with the reason shown, where PostgreSQL's binaries are missing (`.ci/run`
installs Debian's `postgresql`). Same checks as over SQLite: round trip, and best-wins
under threads racing PUTs through the HTTP server, plus the upsert raced directly.
"""

from __future__ import annotations

import random
import threading

import httpx
import pytest
from pg_harness import PostgresServer, postgres_binaries
from service_harness import (
    AUTH,
    TOKEN,
    ServerProcess,
    check_concurrent_best_wins,
    check_round_trip,
    key_of,
)

from compiler.service import db

FOUND = postgres_binaries()


@pytest.fixture(scope="module")
def postgres():
    if isinstance(FOUND, str):
        pytest.skip(FOUND)
    server = PostgresServer(*FOUND)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(postgres, tmp_path_factory):
    log = tmp_path_factory.mktemp("pg-service") / "log"
    with ServerProcess(postgres.url, token=TOKEN, log_path=log) as srv:
        yield srv


def test_health_names_postgresql(service):
    assert httpx.get(f"{service.url}/v1/health").json()["database"] == "postgresql"


def test_round_trip(service):
    check_round_trip(service.url, AUTH)


def test_concurrent_writers_keep_the_minimum(service):
    check_concurrent_best_wins(service.url, AUTH, threads=8, per_thread=25)


def test_upsert_races_directly_on_one_row(postgres):
    """No HTTP in between: 8 threads, one key, the minimum of all writes stays."""
    engine = db.make_engine(postgres.url)
    db.create_schema(engine)
    k = key_of(f"pg-direct-{random.random()}")
    written: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def race(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(30):
            latency = rng.uniform(1e-4, 1.0)
            db.upsert(
                engine,
                k,
                {"target": "pg", "config": {"seed": seed}, "latency_s": latency, "meta": {}},
            )
            with lock:
                written.append(latency)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.get(engine, k)["latency_s"] == min(written)
    engine.dispose()


@pytest.mark.slow
def test_records_survive_a_service_restart(postgres, service):
    k = key_of("pg-restart")
    assert (
        httpx.put(
            f"{service.url}/v1/records/{k}",
            json={"target": "pg", "config": {}, "latency_s": 0.5},
            headers=AUTH,
        ).status_code
        == 200
    )
    service.stop()
    service.start()
    assert httpx.get(f"{service.url}/v1/records/{k}").json()["latency_s"] == 0.5
