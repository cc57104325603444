"""Issue 17 acceptance, part 7: the tablet's local API under abuse, with a normal client timed throughout.

The server is the real LocalApi component (its own socket, selector and workers) with
short timeouts so the tests stay fast; the attacks are raw sockets from the test.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time

import pytest

from edge.localapi.client import call
from edge.localapi.server import LocalApi, Request, json_response
from edge.localapi.settings import LocalApiSettings
from edge.testing.wait import wait_for

BUDGET_S = 0.1  # a normal request is answered within this, whatever else is going on


@pytest.fixture
def api(tmp_path):
    settings = LocalApiSettings(socket_path=tmp_path / "api.sock", request_timeout_s=1.0, idle_timeout_s=2.0,
                                max_connections=256, workers=4)
    server = LocalApi(settings, tmp_path)
    server.add_route("GET", "/v1/ping", lambda req: json_response({"ok": True}))

    def echo(req: Request):
        return json_response({"type": type(req.json()).__name__})

    server.add_route("POST", "/v1/echo", echo)
    server.start()
    yield server
    server.stop()


def _normal(api, n: int = 5) -> list[float]:
    """Time ``n`` ordinary requests (a new connection each, as the UI's client makes them)."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        status, _, body = call(api.path, "GET", "/v1/ping", timeout=5)
        times.append(time.perf_counter() - started)
        assert status == 200 and json.loads(body) == {"ok": True}
    return times


def _open(api, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(api.path))
        socks.append(s)
    return socks


def _close(socks) -> None:
    for s in socks:
        s.close()


def _assert_fast(times: list[float]) -> None:
    assert max(times) < BUDGET_S, f"normal requests took {[round(t * 1000, 1) for t in times]} ms"


def test_a_10000_deep_json_gets_a_clear_400_and_the_api_keeps_answering(api):
    for depth, want in ((10_000, 400), (33, 400), (32, 200), (5, 200)):
        body = ("[" * depth + "]" * depth).encode()
        status, _, raw = call(api.path, "POST", "/v1/echo", body)
        assert status == want, (depth, raw[:200])
        if want == 400:
            assert json.loads(raw)["error"]["code"] == "too_deep"
    deep_object = ('{"a":' * 10_000 + "1" + "}" * 10_000).encode()
    assert call(api.path, "POST", "/v1/echo", deep_object)[0] == 400
    _assert_fast(_normal(api))


def test_2000_idle_connections_cost_no_threads_and_do_not_starve_a_normal_client(api):
    # Threads this process ran before (another test's broker client winding down) are not the
    # server's; the server's are its selector and its workers, which the selector starts.
    before = {t.ident for t in threading.enumerate()}
    server = {"localapi", *(f"localapi-{i}" for i in range(api.settings.workers))}
    socks = _open(api, 2000)
    try:
        # Timed once the server has taken the flood in (the oldest made room for the newest):
        # a client connecting mid-flood waits behind it in the kernel's accept queue, whatever
        # the server does.
        wait_for(lambda: api.status()["refused"]["connections"] >= 2000 - 256, 10, "the flood accepted")
        _assert_fast(_normal(api, 10))
        # No thread per connection: the selector and the 4 workers, nothing else started.
        started = [t.name for t in threading.enumerate() if t.ident not in before]
        assert set(started) <= server and len(started) <= len(server), started
        assert api.status()["connections"] <= 256  # the oldest idle ones made room
        # The survivors are closed once idle too long (2 s here): the server hangs up.
        last = socks[-1]
        last.settimeout(10)
        assert last.recv(1) == b""
    finally:
        _close(socks)
    assert api.status()["connections"] == 0


def test_slowloris_200_connections_get_408_and_a_normal_client_is_answered_throughout(api):
    socks = _open(api, 200)
    times: list[float] = []
    try:
        for s in socks:  # a request that never completes: headers trickle in
            s.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n")
        # Timed once the server holds all 200 (as in the idle test: a client connecting while
        # they are still in the kernel's accept queue waits behind them, whatever the server does).
        wait_for(lambda: api.status()["connections"] >= 200, 10, "the 200 slow connections accepted")
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:  # inside the request timeout: all 200 still held open
            for s in socks[:20]:
                s.sendall(b"X-Slow: 1\r\n")
            times += _normal(api, 2)
        _assert_fast(times)
        answers = []
        for s in socks:
            s.settimeout(10)
            answers.append(s.recv(200))
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:30] for a in answers}
    finally:
        _close(socks)
    assert api.status()["refused"]["timeouts"] >= 200


def test_a_burst_of_100_connects_is_accepted_and_every_one_answered(api):
    results: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def client():
        go.wait()
        status = call(api.path, "GET", "/v1/ping", timeout=10)[0]
        with lock:
            results.append(status)

    workers = [threading.Thread(target=client) for _ in range(100)]
    for t in workers:
        t.start()
    go.set()
    times = _normal(api, 5)
    for t in workers:
        t.join(15)
    assert results == [200] * 100
    assert statistics.median(times) < BUDGET_S


def test_when_every_connection_is_mid_request_a_new_one_gets_503(tmp_path):
    settings = LocalApiSettings(socket_path=tmp_path / "a.sock", request_timeout_s=5.0, max_connections=10)
    server = LocalApi(settings, tmp_path)
    server.add_route("GET", "/v1/ping", lambda req: json_response({"ok": True}))
    server.start()
    socks = _open(server, 10)
    try:
        for s in socks:
            s.sendall(b"GET /v1/ping HTTP/1.1\r\n")
        deadline = time.monotonic() + 5
        while server.status()["connections"] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, body = call(server.path, "GET", "/v1/ping", timeout=5)
        assert status == 503 and json.loads(body)["error"]["code"] == "too_many_connections"
        assert headers.get("Retry-After") == "1"
    finally:
        _close(socks)
        server.stop()
