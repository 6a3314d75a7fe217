"""The cache service's HTTP API against a real `kiln serve` on loopback, over SQLite.

Round trip, best-wins under racing writers, the token, and every kind of bad request
(oversized, malformed JSON, invalid record, malformed key) with proof that nothing bad
was stored. Durability (restart, kill -9) is in `test_service_durability.py`.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from service_harness import (
    AUTH,
    TOKEN,
    ServerProcess,
    check_concurrent_best_wins,
    check_round_trip,
    key_of,
    record,
)

from compiler.service.config import MAX_BODY_BYTES


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service")
    with ServerProcess(
        f"sqlite:///{tmp / 'cache.sqlite'}", token=TOKEN, log_path=tmp / "server.log"
    ) as srv:
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_health_and_openapi_docs(http):
    assert http.get("/v1/health").json()["status"] == "ok"
    assert http.get("/v1/health").json()["database"] == "sqlite"
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/health", "/v1/records/{key}", "/v1/records", "/v1/stats"} <= set(paths)
    assert {"get", "put"} <= set(paths["/v1/records/{key}"])


def test_round_trip(server):
    check_round_trip(server.url, AUTH)


def test_the_fastest_record_wins(http):
    k = key_of("sequential")
    assert http.put(f"/v1/records/{k}", json=record(0.5, tile=1), headers=AUTH).json()["improved"]
    slower = http.put(f"/v1/records/{k}", json=record(0.7, tile=2), headers=AUTH).json()
    assert not slower["improved"] and slower["record"]["config"] == {"tile": 1}
    tie = http.put(f"/v1/records/{k}", json=record(0.5, tile=3), headers=AUTH).json()
    assert not tie["improved"]  # the first of equals stays
    faster = http.put(f"/v1/records/{k}", json=record(0.25, tile=4), headers=AUTH).json()
    assert faster["improved"]
    stored = http.get(f"/v1/records/{k}").json()
    assert (stored["latency_s"], stored["config"]) == (0.25, {"tile": 4})
    assert stored["created_at"] < stored["updated_at"]


def test_concurrent_writers_keep_the_minimum(server):
    check_concurrent_best_wins(server.url, AUTH)


def test_writes_need_the_token(http):
    k = key_of("unauthorized")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic eDp5"},
    ):
        response = http.put(f"/v1/records/{k}", json=record(0.1), headers=headers)
        assert response.status_code == 401, headers
        assert "token" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert http.get(f"/v1/records/{k}").status_code == 404  # reads stay open; nothing stored


def test_oversized_bodies_get_413(http):
    k = key_of("oversized")
    big = record(0.1)
    big["meta"] = {"blob": "x" * (MAX_BODY_BYTES + 1)}
    assert http.put(f"/v1/records/{k}", json=big, headers=AUTH).status_code == 413

    def chunks():  # no Content-Length: the server has to count what arrives
        yield b'{"target": "llvm", "config": {}, "latency_s": 0.1, "meta": {"blob": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b"x" * 1024
        yield b'"}}'

    response = http.put(
        f"/v1/records/{k}", content=chunks(), headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert http.get(f"/v1/records/{k}").status_code == 404


def test_a_lying_content_length_gets_413_before_the_body(server):
    """A client announcing a huge body is refused without the server reading it."""
    k = key_of("content-length")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            f"PUT /v1/records/{k} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {10 * MAX_BODY_BYTES}\r\n\r\n{{".encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 413")


BAD_BODIES = {
    "not json": b'{"target": "llvm", "config": ',
    "not an object": b"[1, 2, 3]",
    "missing latency": json.dumps({"target": "llvm", "config": {}}).encode(),
    "unknown field": json.dumps({**record(0.1), "best": True}).encode(),
    "negative latency": json.dumps(record(-1.0)).encode(),
    "zero latency": json.dumps(record(0.0)).encode(),
    "latency as text": json.dumps({**record(0.1), "latency_s": "fast"}).encode(),
    "NaN latency": b'{"target": "llvm", "config": {}, "latency_s": NaN}',
    "Infinity in config": b'{"target": "llvm", "config": {"x": Infinity}, "latency_s": 0.1}',
    "config not an object": json.dumps({**record(0.1), "config": [1, 2]}).encode(),
    "empty target": json.dumps({**record(0.1), "target": ""}).encode(),
    "control character in target": json.dumps({**record(0.1), "target": "llvm\n"}).encode(),
    "deeply nested meta": json.dumps(
        {**record(0.1), "meta": {"x": json.loads("[" * 40 + "]" * 40)}}
    ).encode(),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_malformed_bodies_get_422_and_store_nothing(http, name):
    k = key_of(f"bad-{name}")
    response = http.put(
        f"/v1/records/{k}",
        content=BAD_BODIES[name],
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"]
    assert http.get(f"/v1/records/{k}").status_code == 404


@pytest.mark.parametrize(
    "bad", ["abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, key_of(1)[:-1] + "%20"]
)
def test_malformed_keys_get_422(http, bad):
    for response in (
        http.get(f"/v1/records/{bad}"),
        http.put(f"/v1/records/{bad}", json=record(0.1), headers=AUTH),
    ):
        assert response.status_code == 422, (bad, response.text)
        assert "pattern" in response.json()["detail"][0]["msg"]
    listed = http.get("/v1/records", params={"limit": 1000}).json()["records"]
    assert all(len(r["key"]) == 64 for r in listed)


def test_list_limits_and_filters(http):
    for i in range(5):
        http.put(
            f"/v1/records/{key_of(f'list-{i}')}",
            json=record(0.1 + i, target="list-target"),
            headers=AUTH,
        )
    listed = http.get("/v1/records", params={"target": "list-target", "limit": 3}).json()["records"]
    assert len(listed) == 3 and {r["target"] for r in listed} == {"list-target"}
    assert http.get("/v1/records", params={"target": "no-such-target"}).json()["records"] == []
    assert http.get("/v1/records", params={"limit": 0}).status_code == 422
    assert http.get("/v1/records", params={"limit": 10**6}).status_code == 422


def test_stats_count_records_hits_and_misses(http):
    before = http.get("/v1/stats").json()
    k = key_of("stats")
    http.get(f"/v1/records/{k}")  # miss
    http.put(f"/v1/records/{k}", json=record(0.2, target="stats-target"), headers=AUTH)
    http.put(
        f"/v1/records/{k}", json=record(0.3, target="stats-target"), headers=AUTH
    )  # not better
    http.get(f"/v1/records/{k}")  # hit
    http.get(f"/v1/records/{k}")  # hit
    http.put(f"/v1/records/{k}", json=record(0.1), headers={})  # refused: not a write
    after = http.get("/v1/stats").json()
    assert after["records"] == before["records"] + 1
    assert after["targets"]["stats-target"] == 1
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (2, 1)
    assert (after["writes"] - before["writes"], after["improvements"] - before["improvements"]) == (
        2,
        1,
    )


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("mysql://u@h/db", "supports sqlite:/// and postgresql://"),
        ("sqlite://", "in-memory"),
        ("::nonsense", "cannot parse"),
    ],
)
def test_serve_rejects_unusable_databases(db, message):
    from typer.testing import CliRunner

    from compiler.cli import app

    result = CliRunner().invoke(app, ["serve", "--db", db, "--port", "1"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
