"""Bounded load generator for the autotuning cache service, on loopback only.

    python -m benchmarks.service_load [--clients 4] [--duration 10] [--write-fraction 0.2]
                                      [--keys 1000] [--url http://127.0.0.1:PORT] [--json]

Without `--url` it starts its own `kiln serve` over a fresh SQLite file in a temporary
folder (WAL, synchronous=FULL: every write is an fsync) and stops it afterwards. Each
client is a thread with its own keep-alive connection, issuing back-to-back requests:
GETs of random keys (most of them hits: the key space is filled first) and PUTs of random
latencies. It prints requests per second and p50 / p99 latency for reads, writes and all.

Bounded on purpose: at most 16 clients for at most 60 s, and only loopback URLs, so it
can never be pointed at a team's real service by mistake. The clients share the machine
with the server, so on a 2-core box the numbers are a floor for what the server can do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

MAX_CLIENTS = 16
MAX_DURATION_S = 60.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def key_of(i: int) -> str:
    return hashlib.sha256(f"load-{i}".encode()).hexdigest()


def body(rng: random.Random) -> dict:
    return {
        "target": "llvm -mcpu=znver5",
        "config": {
            "tile": [rng.choice([8, 16, 32, 64]), rng.choice([4, 8, 16])],
            "vector": 16,
            "unroll": 4,
        },
        "latency_s": rng.uniform(1e-5, 1e-2),
        "meta": {"tuner": "load", "trial": rng.randrange(1000)},
    }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_load(
    url: str, clients: int, duration_s: float, write_fraction: float, keys: int, token: str | None
) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:  # fill the key space
        rng = random.Random(0)
        for i in range(keys):
            http.put(f"/v1/records/{key_of(i)}", json=body(rng)).raise_for_status()

    latencies: dict[str, list[float]] = {"read": [], "write": []}
    errors: list[str] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine: dict[str, list[float]] = {"read": [], "write": []}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            start_barrier.wait()
            while time.perf_counter() < deadline[0]:
                k = key_of(rng.randrange(keys))
                kind = "write" if rng.random() < write_fraction else "read"
                t0 = time.perf_counter()
                response = (
                    http.put(f"/v1/records/{k}", json=body(rng))
                    if kind == "write"
                    else http.get(f"/v1/records/{k}")
                )
                mine[kind].append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors.append(f"{kind} {response.status_code}")
        with lock:
            for kind, values in mine.items():
                latencies[kind].extend(values)

    threads = [threading.Thread(target=client, args=(i + 1,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + duration_s
    t_start = time.perf_counter()
    start_barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start

    def summary(values: list[float]) -> dict:
        values = sorted(values)
        return {
            "requests": len(values),
            "rps": len(values) / elapsed,
            "p50_ms": percentile(values, 0.50) * 1e3,
            "p99_ms": percentile(values, 0.99) * 1e3,
        }

    return {
        "clients": clients,
        "duration_s": elapsed,
        "write_fraction": write_fraction,
        "keys": keys,
        "errors": len(errors),
        "read": summary(latencies["read"]),
        "write": summary(latencies["write"]),
        "all": summary(latencies["read"] + latencies["write"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--write-fraction", type=float, default=0.2)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--url", help="a running service on loopback (default: start one)")
    parser.add_argument("--token", help="the service's write token, if it has one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION_S:
        parser.error(
            f"--clients must be 1..{MAX_CLIENTS} and --duration in (0, {MAX_DURATION_S:.0f}] s"
        )
    if not 0 <= args.write_fraction <= 1 or args.keys < 1:
        parser.error("--write-fraction must be in [0, 1] and --keys positive")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error(f"--url {args.url}: the load generator only targets loopback")

    with tempfile.TemporaryDirectory(prefix="kiln-load-") as tmp:
        server = None
        url = args.url
        if url is None:
            server = _start_server(Path(tmp))
            url = server.url
        try:
            result = run_load(
                url, args.clients, args.duration, args.write_fraction, args.keys, args.token
            )
        finally:
            if server is not None:
                server.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['clients']} clients, {result['duration_s']:.1f} s, {result['keys']} keys, "
            f"{result['write_fraction']:.0%} writes, {result['errors']} errors"
        )
        for kind in ("read", "write", "all"):
            s = result[kind]
            print(
                f"  {kind:5s} {s['requests']:7d} requests  {s['rps']:8.1f} req/s  "
                f"p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms"
            )
    return 1 if result["errors"] else 0


class _Server:
    def __init__(self, proc, url: str) -> None:
        self.proc, self.url = proc, url

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _start_server(tmp: Path) -> _Server:
    import socket
    import subprocess

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "compiler.service",
        "--db",
        f"sqlite:///{tmp / 'load.sqlite'}",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb")
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return _Server(proc, url)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"kiln serve did not start: {(tmp / 'server.log').read_text()[-2000:]}")


if __name__ == "__main__":
    sys.exit(main())
