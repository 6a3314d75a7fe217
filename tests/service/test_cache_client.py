"""`CacheClient`: reads and writes through the service, and never blocks a compile on it.

With the server down (nothing listening, or a listener that never answers) the client
answers from its local SQLite cache within the time budget, and stops trying the server
for a while so later calls cost nothing.
"""

from __future__ import annotations

import math
import socket
import time

import pytest
from service_harness import TOKEN, ServerProcess, free_port, key_of

from compiler.service import db
from compiler.service.client import CacheClient, CacheServiceError, Record

REC = Record(
    target="llvm -mcpu=znver5", config={"tile": [32, 8]}, latency_s=0.004, meta={"trials": 8}
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client-server")
    with ServerProcess(
        f"sqlite:///{tmp / 'server.sqlite'}", token=TOKEN, log_path=tmp / "log"
    ) as srv:
        yield srv


def test_round_trip_through_the_server_mirrors_locally(server, tmp_path):
    k = key_of("client-round-trip")
    with CacheClient(server.url, token=TOKEN, local_path=tmp_path / "local.sqlite") as client:
        assert client.get(k) is None and client.source == "none"
        client.put(k, REC)
        assert client.source == "server"
        assert client.get(k) == REC and client.source == "server"
        client.put(k, Record(REC.target, {"tile": [8, 8]}, 0.009))  # slower: ignored everywhere
        assert client.get(k) == REC
    assert (
        Record.from_row(db.get(db.make_engine(f"sqlite:///{tmp_path / 'local.sqlite'}"), k)) == REC
    )
    with CacheClient(server.url, local_path=tmp_path / "other.sqlite") as fresh:  # another machine
        assert fresh.get(k) == REC and fresh.source == "server"


def test_falls_back_to_the_local_cache_when_nothing_listens(tmp_path):
    k = key_of("client-down")
    start = time.monotonic()
    said: list[str] = []
    with CacheClient(
        f"http://127.0.0.1:{free_port()}", local_path=tmp_path / "local.sqlite", on_fallback=said.append
    ) as client:
        client.put(k, REC)
        assert client.source == "local"
        assert client.get(k) == REC and client.source == "local"
        assert client.get(key_of("unknown")) is None and client.source == "none"
    assert time.monotonic() - start < 2.0
    assert len(said) == 1 and "is unreachable" in said[0]  # said, once


def test_a_server_that_never_answers_costs_one_timeout(tmp_path):
    """A listener that accepts and stays silent (a hung server): bounded, then skipped."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        said: list[str] = []
        with CacheClient(url, local_path=tmp_path / "local.sqlite", timeout_s=0.5, on_fallback=said.append) as client:
            start = time.monotonic()
            assert client.get(key_of("hung")) is None
            first = time.monotonic() - start
            start = time.monotonic()
            client.put(key_of("hung"), REC)
            assert client.get(key_of("hung")) == REC and client.source == "local"
            later = time.monotonic() - start
    assert first < 2.0
    assert later < 0.5  # the server is not tried again until retry_after_s has passed
    assert len(said) == 1 and "timed out" in said[0]


def test_an_unroutable_server_is_bounded_by_the_connect_timeout(tmp_path):
    start = time.monotonic()
    said: list[str] = []
    with CacheClient("http://10.255.255.1:9", local_path=tmp_path / "local.sqlite", on_fallback=said.append) as client:
        assert client.get(key_of("unroutable")) is None
    assert len(said) == 1  # unreachable, or (behind a proxy that answers 404) not a kiln cache
    assert time.monotonic() - start < 2.0


def test_the_server_coming_back_after_an_outage(server, tmp_path):
    k = key_of("outage")
    with CacheClient(
        f"http://127.0.0.1:{free_port()}", local_path=tmp_path / "l.sqlite", on_fallback=lambda _: None
    ) as offline:
        offline.put(k, REC)  # measured while the service was down
    with CacheClient(
        server.url, token=TOKEN, local_path=tmp_path / "l.sqlite", retry_after_s=0
    ) as online:
        assert online.get(k) == REC and online.source == "local"  # the server has not seen it
        online.put(k, REC)
        assert online.source == "server"


def test_from_env_reads_kiln_cache(monkeypatch, server, tmp_path):
    monkeypatch.setenv("KILN_CACHE", server.url)
    monkeypatch.setenv("KILN_CACHE_TOKEN", TOKEN)
    client = CacheClient.from_env(local_path=tmp_path / "l.sqlite")
    assert client.url == server.url
    client.put(key_of("env"), REC)
    assert client.source == "server"
    assert (
        CacheClient.from_env("http://example.invalid", local_path=tmp_path / "l.sqlite").url
        == "http://example.invalid"
    )
    monkeypatch.delenv("KILN_CACHE")
    offline = CacheClient.from_env(local_path=tmp_path / "l.sqlite")
    assert offline.url is None and offline.get(key_of("env")) == REC and offline.source == "local"


def test_bad_keys_records_and_tokens_are_refused(server, tmp_path):
    with CacheClient(server.url, token="wrong", local_path=tmp_path / "l.sqlite") as client:
        with pytest.raises(ValueError, match="not a kernel key"):
            client.get("ABC")
        with pytest.raises(ValueError, match="latency_s"):
            client.put(key_of("nan"), Record("llvm", {}, math.nan))
        assert client.get(key_of("nan")) is None  # nothing stored, not even locally
        with pytest.raises(CacheServiceError, match="401"):
            client.put(key_of("wrong-token"), REC)


def test_an_unusable_local_cache_degrades_to_no_cache(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with CacheClient(f"http://127.0.0.1:{free_port()}", local_path=blocker / "local.sqlite") as client:
        with pytest.warns(RuntimeWarning, match="unusable"):
            client.put(key_of("no-local"), REC)
        assert client.get(key_of("no-local")) is None and client.source == "none"


def test_something_else_at_the_url_is_treated_as_down(tmp_path):
    """A web server that answers 200 with something that is not a record."""
    import http.server
    import threading

    class NotKiln(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotKiln) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        said: list[str] = []
        with CacheClient(url, local_path=tmp_path / "l.sqlite", on_fallback=said.append) as client:
            assert client.get(key_of("html")) is None and client.source == "none"
        assert said and "does not answer like a kiln cache service" in said[0]
        httpd.shutdown()
