"""Learning: bounded chunk retries, signed catalog expiry, size checked before parsing, NaN on the topic.

Findings of issue 19: chunks with a wrong hash were re-requested without a cap
(about 4 600 in 6 s); a catalog had no expiry (issued in 2001 or 2999, both
accepted); a 64 MB unsigned catalog was read whole before its signature was
checked; a NaN catalog killed the learning worker.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.publish as publish
import pytest

from edge import signing
from edge.localapi.client import ApiUnavailable, call_json
from edge.testing.wait import wait_for
from services.learning import _transfer
from services.learning._cache import ContentCache
from services.learning._catalog import (
    MAX_CATALOG_BYTES,
    CatalogKeeper,
    CatalogRejected,
    parse_catalog,
)
from services.learning._link import StandaloneLink
from services.learning.protocol import catalog_topic
from tests._learning_helpers import CHUNK, central_key, make_folder, start_server

SITE, DEVICE = "site-1", "tab-1"


def test_a_chunk_that_is_always_corrupt_fails_its_item_after_a_bounded_budget(tmp_path, mosquitto):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"bad.mp4": 5 * CHUNK, "good.pdf": 2 * CHUNK}})
    server = start_server(mosquitto, folder, SITE, key)
    catalog = parse_catalog(server.publish_catalog(version=1), signing.load_public_keys([pub]), SITE)
    bad = next(i for i in catalog.courses[0].items if i.name.endswith("bad.mp4"))
    with open(folder / "c1" / "bad.mp4", "r+b") as f:  # the server now answers chunk 3 wrongly, always
        f.seek(3 * CHUNK)
        f.write(b"\xff" * 16)
    link = StandaloneLink(mosquitto.uri, client_id=DEVICE).start()
    dl = _transfer.Downloader(link=link, site=SITE, device=DEVICE, cache=ContentCache(tmp_path / "cache", 1 << 26),
                              concurrency=2, rate_limit_bytes_s=0, chunk_timeout_s=5)
    dl.start()
    try:
        for item in catalog.courses[0].items:
            dl.enqueue(item, catalog.chunk_size, "c1")
        wait_for(lambda: dl.idle() and dl.counters["items_failed"] == 1, what="the bad item to fail")
        assert server.served[(bad.sha256, 3)] == _transfer.CHUNK_ATTEMPTS  # bounded, not thousands
        reason = dl.failed[bad.sha256]["reason"]
        assert "chunk 3" in reason and "sha256 does not match" in reason
        assert not dl.enqueue(bad, catalog.chunk_size, "c1")  # within its back-off: not queued again
        assert dl.counters["items_completed"] == 1  # positive control: the good item is cached
    finally:
        dl.stop()
        link.stop()
        server.stop()
        server.link.stop()


def _catalog(key, **fields) -> dict:
    now = datetime.now(UTC)
    doc = {"type": "learning.catalog", "site": SITE, "version": 1, "issued_at": now.isoformat(),
           "expires_at": (now + timedelta(days=30)).isoformat(), "chunk_size": CHUNK, "courses": [],
           "assignments": []}
    return signing.sign({**doc, **fields}, key)


@pytest.mark.parametrize(("issued", "expires", "why"), [
    ("2001-01-01T00:00:00Z", "2001-02-01T00:00:00Z", "expired"),
    ("2999-01-01T00:00:00Z", "2999-02-01T00:00:00Z", "in the future"),
    ("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "days"),
])
def test_catalogs_outside_their_signed_validity_are_refused(tmp_path, issued, expires, why):
    key, pub, _ = central_key(tmp_path)
    keeper = CatalogKeeper(tmp_path / "catalog.json", signing.load_public_keys([pub]), SITE)
    with pytest.raises(CatalogRejected, match=why):
        keeper.offer(json.dumps(_catalog(key, issued_at=issued, expires_at=expires)).encode())
    assert keeper.current is None
    assert keeper.offer(json.dumps(_catalog(key)).encode()).version == 1  # positive control


def test_a_catalog_without_expiry_is_refused(tmp_path):
    key, pub, _ = central_key(tmp_path)
    doc = _catalog(key)
    unsigned = {k: v for k, v in doc.items() if k not in ("expires_at", "signatures")}
    keeper = CatalogKeeper(tmp_path / "catalog.json", signing.load_public_keys([pub]), SITE)
    with pytest.raises(CatalogRejected, match="expires_at"):
        keeper.offer(json.dumps(signing.sign(unsigned, key)).encode())


def test_a_huge_catalog_is_refused_before_it_is_parsed(tmp_path):
    key, pub, _ = central_key(tmp_path)
    keeper = CatalogKeeper(tmp_path / "catalog.json", signing.load_public_keys([pub]), SITE)
    huge = b'{"type": "learning.catalog", "pad": "' + b"x" * MAX_CATALOG_BYTES + b'"}'
    started = time.perf_counter()
    with pytest.raises(CatalogRejected, match="over the .*-byte limit"):
        keeper.offer(huge)
    assert time.perf_counter() - started < 0.5  # refused from its length alone, nothing parsed


def test_a_nan_catalog_leaves_the_learning_worker_running(tmp_path, mosquitto, edge_daemon):
    key, pub, _ = central_key(tmp_path)
    daemon = edge_daemon({"device_id": DEVICE, "site": SITE, "role": "tablet",
                          "logging": {"level": "info", "format": "json"},
                          "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                          "trust": {"central_keys": [str(pub)]}, "drivers": []})
    api = daemon.state_dir / "api.sock"

    def status() -> dict:
        try:
            code, body = call_json(api, "GET", "/v1/learning/status", timeout=5)
        except ApiUnavailable:
            return {}
        return body if code == 200 else {}
    wait_for(status, what="the local API")
    for hostile in (b'{"type": "learning.catalog", "version": NaN, "signatures": [{"key_id": "x", "sig": ""}]}',
                    json.dumps(_catalog(key, version=7)).replace('"version": 7', '"version": 1e999').encode(),
                    json.dumps(_catalog(key, version=9)).replace('"version": 9', '"version": 9, "x": "\\udfff"').encode()):
        publish.single(catalog_topic(SITE), hostile, qos=1, hostname="127.0.0.1", port=mosquitto.port)
    wait_for(lambda: status().get("catalogs_rejected") == 3, what="three refusals")
    publish.single(catalog_topic(SITE), json.dumps(_catalog(key, version=8)), qos=1, retain=True,
                   hostname="127.0.0.1", port=mosquitto.port)
    assert wait_for(lambda: status().get("catalog_version") == 8, what="the valid catalog applied")
    assert json.loads(daemon.cli("status", "--json").stdout)["daemon"]["components"]["learning"]["status"] == "ok"
