"""The cache client says what it does (issue 9, item 9), against a real server on loopback.

Seen before: `--cache` unreachable or not a URL fell back to the local cache in silence;
`kiln tune --cache URL` without the token measured every kernel and then failed with 401
while storing; and the tuner stored its target as TVM's whole LLVM target string, so
`GET /v1/records?target=tvm` listed none of its records.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from service_harness import ROOT, TOKEN, ServerProcess, free_port, key_of

from compiler.service.client import CacheClient, CacheServiceError, CacheURLError, Record
from compiler.tuner.configs import CacheConfigs
from compiler.tuner.search import KernelResult
from compiler.tuner.tuner import _record

FULL_TARGET = '{"kind": "llvm", "mcpu": "znver4", "tag": "", "keys": ["cpu"]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preflight-server")
    with ServerProcess(f"sqlite:///{tmp / 'server.sqlite'}", token=TOKEN, log_path=tmp / "log") as srv:
        yield srv


def kiln(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KILN_CACHE")}
    full.update(XDG_CACHE_HOME=str(home), KILN_TUNE_DIR=str(home / "tune"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("url", ["localhost:8000", "127.0.0.1", "cache.example", "ftp://h/", "http://:80",
                                 "http://h:port"])
def test_a_cache_that_is_not_a_url_is_refused(url: str) -> None:
    with pytest.raises(CacheURLError, match="tuning cache"):
        CacheClient(url)


def test_an_unreachable_cache_is_said_once(tmp_path: Path) -> None:
    said: list[str] = []
    url = f"http://127.0.0.1:{free_port()}"
    with CacheClient(url, local_path=tmp_path / "l.sqlite", on_fallback=said.append) as client:
        assert client.preflight() is False
        rec = Record("tvm", {"n": 1}, 1e-3)
        client.put(key_of("down"), rec)
        assert client.get(key_of("down")) == rec and client.source == "local"
    assert len(said) == 1
    assert said[0].startswith(f"tuning cache {url} is unreachable") and "local cache" in said[0]


def test_preflight_checks_the_token_before_any_work(server, tmp_path: Path) -> None:
    with CacheClient(server.url, local_path=tmp_path / "l.sqlite", on_fallback=pytest.fail) as reader:
        assert reader.preflight() is True  # reads need no token
        with pytest.raises(CacheServiceError, match="KILN_CACHE_TOKEN"):
            reader.preflight(write=True)
    with CacheClient(server.url, token=TOKEN, local_path=tmp_path / "l.sqlite") as writer:
        assert writer.preflight(write=True) is True
    assert httpx.get(f"{server.url}/v1/auth").status_code == 401


def test_kiln_tune_without_the_token_fails_before_measuring(server, tmp_path: Path) -> None:
    start = time.monotonic()
    done = kiln("tune", "examples/zoo.py:mlp", "--cache", server.url, home=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cache service {server.url} refuses writes without its token (401): set "
        "KILN_CACHE_TOKEN to the token given to `kiln serve --token`"
    ]
    assert time.monotonic() - start < 60  # no kernel was measured
    assert not (tmp_path / "tune").exists()


def test_kiln_tune_with_a_non_url_is_one_line(tmp_path: Path) -> None:
    done = kiln("tune", "examples/zoo.py:mlp", "--cache", "localhost:8000", home=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: tuning cache 'localhost:8000'") and "not an http(s) URL" in line


def test_tuned_records_are_listed_under_the_target_users_type(server, tmp_path: Path) -> None:
    task = SimpleNamespace(workload="mlp", ops="add+relu")
    result = KernelResult(task, baseline_s=2e-3, best_config={"num_threads": 1}, best_s=1e-3)  # type: ignore[arg-type]
    record = _record(result, FULL_TARGET, None, "tvm")
    assert record.target == "tvm" and record.meta["target"] == FULL_TARGET
    key = key_of("listed-as-tvm")
    with CacheClient(server.url, token=TOKEN, local_path=tmp_path / "l.sqlite") as client:
        client.put(key, record)
        assert client.source == "server"
    listed = httpx.get(f"{server.url}/v1/records", params={"target": "tvm"}).json()["records"]
    assert any(r["key"] == key for r in listed)
    # a build asks with the full target string, and finds the record
    configs = CacheConfigs(CacheClient(server.url, local_path=tmp_path / "other.sqlite"))
    assert configs.config_for(key, FULL_TARGET) == {"num_threads": 1}
    assert configs.config_for(key, FULL_TARGET.replace("znver4", "znver5")) is None


def test_old_records_with_the_full_target_still_match() -> None:
    assert Record(FULL_TARGET, {}, 1e-3).measured_for(FULL_TARGET)
    assert not Record("tvm", {}, 1e-3, {"target": "other"}).measured_for(FULL_TARGET)


def test_a_server_answering_404_to_everything_is_not_a_cache(tmp_path: Path) -> None:
    """A proxy or another web server that says 404 with no body is not "no record": the
    client says so and uses the local cache (it had treated every kernel as a miss)."""
    import http.server
    import threading

    class Nothing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Nothing) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        said: list[str] = []
        with CacheClient(url, local_path=tmp_path / "l.sqlite", on_fallback=said.append) as client:
            assert client.get(key_of("proxy")) is None
            assert client.preflight() is False
        httpd.shutdown()
    assert len(said) == 1 and "does not answer like a kiln cache service" in said[0]
