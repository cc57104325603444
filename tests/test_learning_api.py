"""The learning routes of the unix-socket API, in process with a real store and real files."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import time

import pytest

from edge.config import Settings
from edge.events import make_event
from edge.localapi.client import call, call_json
from edge.localapi.server import LocalApi
from edge.store import Store
from services.learning.api import register
from services.learning.component import LearningComponent
from services.learning.server import ContentServer
from tests._learning_helpers import CHUNK, central_key, make_folder

SITE, DEVICE = "site-1", "tab-1"


class _Daemon:
    """What a component uses of the daemon: settings, emit, link (none: offline)."""

    def __init__(self, settings: Settings):
        self.settings, self.link = settings, None
        self.store = Store(settings.state_dir, device=settings.device_id, site=settings.site)

    def emit(self, type, payload, priority, source):
        return self.store.append(make_event(device=DEVICE, site=SITE, type=type, source=source,
                                            payload=payload, priority=priority))

    def trusted_now(self) -> float:  # no time floor here (tests/security/test_clock_set_back.py has one)
        return time.time()


class _NoLink:
    def publish(self, *a, **k):
        pass


@pytest.fixture
def tablet(tmp_path):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"clip.mp4": 2 * CHUNK + 77}, "c2": {"notes.pdf": 100}})
    server = ContentServer(_NoLink(), folder, SITE, key, chunk_size=CHUNK)
    settings = Settings(device_id=DEVICE, site=SITE, role="tablet", state_dir=tmp_path / "state",
                        trust={"central_keys": [pub]}, learning={"residents": ["r-1", "r-2"]})
    daemon = _Daemon(settings)
    learning = LearningComponent(daemon)
    doc = server.build_catalog(version=3, assignments=[{"course": "c1", "resident": "r-1"},
                                                       {"course": "c2", "device": DEVICE}])
    learning.keeper.offer(doc)
    item = learning.keeper.current.courses[0].items[0]
    data = (folder / "c1" / "clip.mp4").read_bytes()
    learning.cache.write_chunk(item.sha256, 0, len(data), data)
    learning.cache.commit(item.sha256, len(data))
    api = LocalApi(settings.localapi, settings.state_dir)
    register(api, learning)
    learning.start()
    api.start()
    yield api.path, learning, daemon, item, data
    api.stop()
    learning.stop()
    daemon.store.close()


def test_socket_is_owner_and_group_only(tablet):
    path = tablet[0]
    mode = stat.S_IMODE(path.stat().st_mode)
    assert stat.S_ISSOCK(path.stat().st_mode) and mode == 0o660


def test_content_whole_and_ranges(tablet):
    path, _, _, item, data = tablet
    status, headers, body = call(path, "GET", f"/v1/learning/content/{item.sha256}")
    assert status == 200 and body == data and headers["Content-Type"] == "video/mp4"
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = call(path, "GET", f"/v1/learning/content/{item.sha256}",
                                 headers={"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, _, body = call(path, "GET", f"/v1/learning/content/{item.sha256}", headers={"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, headers, _ = call(path, "GET", f"/v1/learning/content/{item.sha256}",
                              headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"


def test_unknown_uncached_and_bad_hashes(tablet):
    path, learning, *_ = tablet
    assert call_json(path, "GET", "/v1/learning/content/" + "a" * 64)[0] == 404
    assert call_json(path, "GET", "/v1/learning/content/xyz")[0] == 400
    other = learning.keeper.current.courses[1].items[0].sha256
    status, headers, _ = call(path, "GET", f"/v1/learning/content/{other}")
    assert status == 503 and headers["Retry-After"] == "30"
    status, body = call_json(path, "GET", "/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_catalog_and_assignments_per_resident(tablet):
    path, _, _, item, _ = tablet
    status, cat = call_json(path, "GET", "/v1/learning/catalog")
    assert status == 200 and cat["version"] == 3 and "signatures" not in cat
    assert cat["courses"][0]["items"][0]["cached"] is True
    status, mine = call_json(path, "GET", "/v1/learning/assignments?resident=r-1")
    assert {a["course"] for a in mine["assignments"]} == {"c1", "c2"}
    status, theirs = call_json(path, "GET", "/v1/learning/assignments?resident=r-2")
    assert {a["course"] for a in theirs["assignments"]} == {"c2"}


def _statement(**over):
    doc = {"actor": {"account": {"homePage": "https://central.example/residents", "name": "r-1"}},
           "verb": {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en": "completed"}},
           "object": {"id": "urn:edge:course:c1"},
           "result": {"score": {"scaled": 0.8}, "success": True, "completion": True},
           "timestamp": "2026-11-27T01:00:00Z"}
    doc.update(over)
    return doc


def test_statement_becomes_a_durable_event(tablet):
    path, _, daemon, _, _ = tablet
    sid = "6f1c7a52-5a0c-4f4c-9d55-1f0d5c3b9a10"
    status, body = call_json(path, "POST", "/v1/learning/statements", _statement(id=sid))
    assert status == 201 and body["id"] == sid
    rows = [json.loads(r.body) for r in daemon.store.outbox_next(10)]
    st = [r for r in rows if r["type"] == "learning.statement"]
    assert len(st) == 1 and st[0]["payload"]["id"] == sid and st[0]["priority"] == "normal"
    assert st[0]["payload"]["result"]["score"]["scaled"] == 0.8


@pytest.mark.parametrize("override, expect", [
    ({"actor": {"mbox": "mailto:someone@example.org"}}, "actor"),
    ({"actor": {"account": {"homePage": "h://x", "name": "r-9"}}}, "not on this tablet"),
    ({"verb": None}, "verb"),
    ({"result": {"score": {"scaled": 3}}}, "scaled"),
    ({"timestamp": "2026-11-27T01:00:00"}, "timezone"),
])
def test_bad_statements_are_refused_and_nothing_stored(tablet, override, expect):
    path, _, daemon, _, _ = tablet
    status, body = call_json(path, "POST", "/v1/learning/statements", _statement(**override))
    assert status == 400 and expect in body["error"]["message"]
    assert not [r for r in daemon.store.outbox_next(10) if r.type == "learning.statement"]


def test_corrupt_cached_file_is_not_served(tablet):
    path, learning, _, item, data = tablet
    learning.cache._verified.clear()  # as after a restart
    with open(learning.cache.path(item.sha256), "r+b") as f:
        f.write(b"\xff" * 8)
    status, body = call_json(path, "GET", f"/v1/learning/content/{item.sha256}")
    assert status == 503 and body["error"]["code"] == "corrupt_refetching"
    assert not learning.cache.has(item.sha256)


def test_parallel_readers(tablet):
    path, _, _, item, data = tablet
    results = []
    def read():
        results.append(hashlib.sha256(call(path, "GET", f"/v1/learning/content/{item.sha256}")[2]).hexdigest())
    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [item.sha256] * 8


def test_every_route_is_in_the_openapi_document(tmp_path):
    from pathlib import Path

    from edge.localapi.settings import LocalApiSettings
    doc = json.loads((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    from services.messaging.api import register as messaging_routes
    from services.residents.api import register as session_routes
    api = LocalApi(LocalApiSettings(), tmp_path)
    register(api, None)  # routes only; nothing is called
    messaging_routes(api, None, None)
    session_routes(api, None)
    assert set(api.router.patterns) == documented


def test_downloads_yield_while_security_events_wait_in_the_outbox(tablet):
    _, learning, daemon, _, _ = tablet
    learning._gate_cache = (0.0, True)
    assert learning._may_proceed()
    daemon.emit("learning.statement", {"x": 1}, "normal", "learning")  # the tablet's own traffic
    learning._gate_cache = (0.0, True)
    assert learning._may_proceed()
    alarm = daemon.emit("turnstile.forced", {"lane": "l1"}, "alarm", "lane1")
    learning._gate_cache = (0.0, True)
    assert not learning._may_proceed()
    daemon.store.mark_acked([alarm.seq])  # the uplink delivered it
    learning._gate_cache = (0.0, True)
    assert learning._may_proceed()


def test_socket_group_is_set_and_a_missing_group_is_a_clear_error(tmp_path):
    import grp
    import os

    from edge.errors import EdgeError
    from edge.localapi.settings import LocalApiSettings
    group = grp.getgrgid(os.getgid()).gr_name
    api = LocalApi(LocalApiSettings(group=group, socket_path=tmp_path / "ui.sock"), tmp_path)
    api.start()
    try:
        st = (tmp_path / "ui.sock").stat()
        assert st.st_gid == os.getgid() and stat.S_IMODE(st.st_mode) == 0o660
    finally:
        api.stop()
    bad = LocalApi(LocalApiSettings(group="no-such-group-xyz", socket_path=tmp_path / "b.sock"), tmp_path)
    with pytest.raises(EdgeError, match="localapi.group"):
        bad.start()
    assert not (tmp_path / "b.sock").exists()
    with pytest.raises(ValueError, match="other"):
        LocalApiSettings(mode="0666")


def test_every_operation_documents_the_local_apis_limits():
    """A UI developer reads from the document what the socket's limits answer (issue 17)."""
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert {"400", "408", "503"} <= set(op["responses"]), f"{method.upper()} {path}"
    assert "too_deep" in doc["components"]["responses"]["BadRequest"]["description"]
