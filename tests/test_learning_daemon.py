"""Issue 8 acceptance: the tablet daemon against a real broker and the reference content server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from edge import signing
from edge.localapi.client import ApiUnavailable, call, call_json
from edge.testing.wait import wait_for
from services.learning._link import StandaloneLink
from services.learning.contract import CatalogRejected
from services.learning.protocol import catalog_topic
from services.learning.statements import Statement
from tests._learning_helpers import CHUNK, central_key, make_folder, start_server

SITE, DEVICE = "site-1", "tab-1"


def _config(mosquitto, pub, **learning) -> dict:
    return {"device_id": DEVICE, "site": SITE, "role": "tablet",
            "logging": {"level": "info", "format": "json"},
            "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
            "trust": {"central_keys": [str(pub)]},
            "learning": {"chunk_timeout_s": 3.0, **learning}, "drivers": []}


def _publish_directory(link, key, daemon, pins: dict[str, str]) -> None:
    """Central's side: a signed resident directory, sealed to the tablet (provisioned here)."""
    from edge import sealing
    from services.residents.directory import make_verifier

    doc = {"type": "residents.directory", "site": SITE, "device": DEVICE, "version": 1,
           "issued_at": "2026-01-01T00:00:00+00:00",
           "residents": [{"pseudonym": r, "status": "active", "verifier": make_verifier(p)} for r, p in pins.items()]}
    sealed = sealing.sealed_message(json.dumps(signing.sign(doc, key)).encode(),
                                    {DEVICE: sealing.device_key(daemon.state_dir).public_raw})
    link.publish(f"edge/v1/{SITE}/{DEVICE}/residents/directory", sealed, retain=True)


def _api(daemon):
    return daemon.state_dir / "api.sock"


def _status(daemon) -> dict:
    try:
        code, body = call_json(_api(daemon), "GET", "/v1/learning/status", timeout=5)
    except ApiUnavailable:
        return {}
    return body if code == 200 else {}


def _cached(daemon, shas) -> bool:
    objects = daemon.state_dir / "learning" / "objects"
    return all((objects / s).exists() for s in shas)


def _items(catalog: dict, course: str | None = None) -> dict[str, dict]:
    return {i["sha256"]: i for c in catalog["courses"] if course in (None, c["id"]) for i in c["items"]}


def test_course_downloads_verifies_and_forged_catalog_is_rejected(tmp_path, mosquitto, edge_daemon,
                                                                   mqtt_collector):
    key, pub, key_path = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"lesson.mp4": 6 * CHUNK + 99, "sheet.pdf": 3000}})
    (folder / "assignments.json").write_text(json.dumps([{"course": "c1", "device": DEVICE}]))
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    serve = subprocess.Popen([sys.executable, "-m", "edge", "content-serve", str(folder), "--broker", mosquitto.uri,
                              "--site", SITE, "--key", str(key_path), "--chunk-size", str(CHUNK),
                              "--version", "5", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(serve.stdout.readline())["version"] == 5
        daemon = edge_daemon(_config(mosquitto, pub))
        status = wait_for(lambda: (s := _status(daemon)).get("catalog_version") == 5 and not s["pinned_missing"]
                          and s, what="the assigned course to be cached", timeout=45)
        code, cat = call_json(_api(daemon), "GET", "/v1/learning/catalog")
        for sha, item in _items(cat).items():
            data = call(_api(daemon), "GET", f"/v1/learning/content/{sha}")[2]
            assert hashlib.sha256(data).hexdigest() == sha and len(data) == item["size"]
        assert status["cached_bytes"] == status["pinned_bytes"] == 6 * CHUNK + 99 + 3000

        out = daemon.cli("learning", "verify", "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["files"] == 2, out.stderr
        out = daemon.cli("learning", "status")
        assert "catalog   v5" in out.stdout and "pinned" in out.stdout

        # A forged catalog (signed by a key central never had) must not replace v5.
        impostor, _, _ = central_key(tmp_path, "impostor")
        forged = signing.sign({**{k: v for k, v in cat.items() if k != "signatures"}, "version": 99,
                               "courses": []}, impostor)
        bad = StandaloneLink(mosquitto.uri).start()
        bad.publish(catalog_topic(SITE), json.dumps(forged).encode(), retain=True)
        bad.stop()
        wait_for(lambda: _status(daemon).get("catalogs_rejected") == 1, what="the forged catalog rejected", timeout=45)
        assert _status(daemon)["catalog_version"] == 5
        ev = collector.wait_for(lambda c: c.events("learning.catalog_rejected"), what="rejection event", timeout=45)
        rejected = CatalogRejected.model_validate(ev[0]["payload"])
        assert "signature" in rejected.reason and rejected.kept_version == 5
    finally:
        serve.terminate()
        serve.wait(10)


def test_sigkill_mid_download_resumes_and_refetches_at_most_the_chunk_in_flight(
        tmp_path, mosquitto, edge_daemon):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"a.mp4": 24 * CHUNK, "b.mp4": 20 * CHUNK + 7}})
    server = start_server(mosquitto, folder, SITE, key)
    try:
        doc = server.publish_catalog(version=1, assignments=[{"course": "c1", "device": DEVICE}])
        shas = list(_items(doc))
        server.inject_corruption(shas[0], 2)  # also: one corrupt chunk on the way
        daemon = edge_daemon(_config(mosquitto, pub, rate_limit_bytes_s=1024 * 1024, concurrency=2))
        wait_for(lambda: sum(server.served.values()) >= 12, what="a dozen chunks served", timeout=45)
        daemon.kill()
        partial = list((daemon.state_dir / "learning" / "partial").glob("*.part"))
        assert partial, "a download must have been in progress at the kill"
        daemon.start()
        wait_for(lambda: _cached(daemon, shas), timeout=60, what="both items cached after restart")
        for sha in shas:
            twice = [i for (s, i), n in server.served.items() if s == sha and n > 1 and (s, i) != (shas[0], 2)]
            assert len(twice) <= 1, f"item {sha[:8]} refetched {twice}: more than the chunk in flight"
            data = (daemon.state_dir / "learning" / "objects" / sha).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha
        assert server.served[(shas[0], 2)] >= 2  # the corrupt answer was not kept
    finally:
        server.stop()
        server.link.stop()


def test_offline_serving_statements_queue_and_quota(tmp_path, mosquitto, edge_daemon, mqtt_collector):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"pinned": {"p.bin": 8 * CHUNK}, "extra1": {"x.bin": 8 * CHUNK},
                                    "extra2": {"y.bin": 8 * CHUNK}})
    server = start_server(mosquitto, folder, SITE, key)
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    try:
        doc = server.publish_catalog(version=1, assignments=[{"course": "pinned", "device": DEVICE}])
        daemon = edge_daemon(_config(mosquitto, pub, quota_bytes=1024 * 1024 + CHUNK,
                                     rate_limit_bytes_s=0), start=False)
        _publish_directory(server.link, key, daemon, {"r-7": "5150"})
        daemon.start()
        pinned, x, y = (next(iter(_items(doc, c))) for c in ("pinned", "extra1", "extra2"))
        wait_for(lambda: _cached(daemon, [pinned]), what="pinned course cached", timeout=45)
        assert daemon.cli("learning", "fetch", "extra1", "--json").returncode == 0
        assert _cached(daemon, [x])
        out = daemon.cli("learning", "fetch", "extra2", "--json")  # three items of 512 KiB > quota
        assert out.returncode == 0, out.stdout + out.stderr
        assert _cached(daemon, [pinned, y]) and not _cached(daemon, [x])
        assert _status(daemon)["evicted_total"] == 1

        mosquitto.stop()
        wait_for(lambda: call(_api(daemon), "GET", f"/v1/learning/content/{pinned}")[0] == 200,
                 what="cached content served offline", timeout=45)
        body = call(_api(daemon), "GET", f"/v1/learning/content/{pinned}", headers={"Range": "bytes=10-19"})
        assert body[0] == 206 and body[2] == (folder / "pinned" / "p.bin").read_bytes()[10:20]
        sid = "0b7e4c1e-8f7a-4d7c-b1c5-3c2f9e0a1d22"
        statement = {"id": sid, "actor": {"account": {"homePage": "https://c.example", "name": "r-7"}},
                     "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
                     "object": {"id": "urn:edge:course:pinned"}, "result": {"score": {"scaled": 0.9}}}
        assert call_json(_api(daemon), "POST", "/v1/learning/statements", statement)[0] == 401  # nobody logged in
        wait_for(lambda: "residents_directory_applied" in daemon.log_tail(10**7), what="directory applied", timeout=45)
        code, session = call_json(_api(daemon), "POST", "/v1/session", {"pseudonym": "r-7", "pin": "5150"})
        assert code == 201, session
        bearer = {"Authorization": f"Bearer {session['token']}"}
        other = {**statement, "actor": {"account": {"homePage": "https://c.example", "name": "r-8"}}}
        assert call_json(_api(daemon), "POST", "/v1/learning/statements", other, headers=bearer)[0] == 403
        assert call_json(_api(daemon), "POST", "/v1/learning/statements", statement, headers=bearer)[0] == 201
        assert not collector.events("learning.statement")
        mosquitto.start()
        try:
            got = collector.wait_for(lambda c: c.events("learning.statement"), timeout=30, what="statement synced")
        except TimeoutError:
            raise AssertionError(daemon.log_tail(6000)) from None
        st = Statement.model_validate(got[0]["payload"])
        assert str(st.id) == sid and st.actor.account.name == "r-7" and st.result.score.scaled == 0.9
    finally:
        server.stop()
        server.link.stop()
