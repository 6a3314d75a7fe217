"""Run a real `kiln serve` on loopback in a subprocess, and the checks every backend shares.

`ServerProcess(db_url, token)` starts `python -m compiler.service` on a free port and
waits for /v1/health; `kill()` is a `kill -9`, `stop()` a polite SIGTERM, `start()` again
is a restart over the same database. `check_round_trip` and `check_concurrent_best_wins`
are run over SQLite and over PostgreSQL.

(The file is not called `conftest.py` or `server.py`: test folders have no `__init__.py`,
so a helper module's name must be unique across `tests/`.)
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_of(i: int | str) -> str:
    import hashlib

    return hashlib.sha256(str(i).encode()).hexdigest()


def record(latency: float, target: str = "llvm -mcpu=znver5", **config) -> dict:
    return {
        "target": target,
        "config": config or {"tile": [32, 8], "vector": 16},
        "latency_s": latency,
        "meta": {"tuner": "test"},
    }


class ServerProcess:
    def __init__(self, db_url: str, token: str | None = None, log_path: Path | None = None) -> None:
        self.db_url = db_url
        self.token = token
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "compiler.service",
                "--db",
                self.db_url,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
            if self.token:
                cmd += ["--token", self.token]
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            env = {k: v for k, v in os.environ.items() if k != "KILN_SERVE_TOKEN"}
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
            if self._wait_ready():
                return self
        raise RuntimeError(f"kiln serve did not start (see {self.log_path})")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        return False

    def kill(self) -> None:
        """`kill -9`: no shutdown handler, no flush, no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- checks shared by the SQLite and PostgreSQL runs --------------------------------


def check_round_trip(url: str, headers: dict | None = None) -> None:
    k = key_of(f"round-trip-{random.random()}")
    with httpx.Client(base_url=url, headers=headers or {}, timeout=10) as http:
        assert http.get(f"/v1/records/{k}").status_code == 404
        body = record(0.00125, target="round-trip", tile=[64, 4], order="mnk", vectorize=True)
        body["meta"] = {"trials": 40, "host": "ci", "nested": {"x": [1, 2.5, None, "s"]}}
        put = http.put(f"/v1/records/{k}", json=body)
        assert put.status_code == 200, put.text
        assert put.json()["improved"] is True
        got = http.get(f"/v1/records/{k}")
        assert got.status_code == 200
        stored = got.json()
        assert {f: stored[f] for f in body} == body
        assert stored["key"] == k and stored["created_at"] <= stored["updated_at"]
        listed = http.get("/v1/records", params={"target": "round-trip", "limit": 10}).json()[
            "records"
        ]
        assert [r["key"] for r in listed if r["key"] == k] == [k]
        assert all(r["target"] == "round-trip" for r in listed)


def check_concurrent_best_wins(
    url: str, headers: dict | None = None, threads: int = 8, per_thread: int = 25
) -> None:
    """Threads race PUTs of random latencies on a few keys; each key keeps the minimum."""
    keys = [key_of(f"race-{random.random()}") for _ in range(3)]
    sent: dict[str, list[tuple[float, int]]] = {k: [] for k in keys}
    lock = threading.Lock()
    failures: list[str] = []
    barrier = threading.Barrier(threads)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, headers=headers or {}, timeout=30) as http:
            barrier.wait()
            for _ in range(per_thread):
                k = rng.choice(keys)
                latency = rng.uniform(1e-4, 1.0)
                response = http.put(f"/v1/records/{k}", json=record(latency, seed=seed))
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                assert response.json()["record"]["latency_s"] <= latency
                with lock:
                    sent[k].append((latency, seed))

    pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not failures, failures[:3]
    with httpx.Client(base_url=url, timeout=10) as http:
        for k, acknowledged in sent.items():
            if acknowledged:
                best, seed = min(acknowledged)
                stored = http.get(f"/v1/records/{k}").json()
                assert (stored["latency_s"], stored["config"]) == (best, {"seed": seed})
