"""Chunk transfer against a real broker and the reference content server, in process."""

from __future__ import annotations

import hashlib
import threading

import pytest

from edge import signing
from services.learning._cache import ContentCache
from services.learning._catalog import parse_catalog
from services.learning._link import StandaloneLink
from services.learning._transfer import Downloader, TokenBucket
from tests._learning_helpers import CHUNK, central_key, make_folder, start_server

SITE, DEVICE = "site-1", "tab-1"


@pytest.fixture
def setup(tmp_path, mosquitto):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"a.mp4": 5 * CHUNK + 123, "b.pdf": 2 * CHUNK}})
    server = start_server(mosquitto, folder, SITE, key)
    doc = server.publish_catalog(version=1)
    catalog = parse_catalog(doc, signing.load_public_keys([pub]), SITE)
    link = StandaloneLink(mosquitto.uri, client_id=DEVICE).start()
    cache = ContentCache(tmp_path / "cache", 64 * 1024 * 1024)
    dl = Downloader(link=link, site=SITE, device=DEVICE, cache=cache, concurrency=2,
                    rate_limit_bytes_s=0, chunk_timeout_s=5)
    dl.start()
    yield server, catalog, cache, dl
    dl.stop()
    link.stop()
    server.stop()
    server.link.stop()


def _download_all(dl, catalog, timeout=20):
    done = threading.Event()
    for course in catalog.courses:
        for item in course.items:
            dl.enqueue(item, catalog.chunk_size, course.id)
    deadline = __import__("time").monotonic() + timeout
    while not dl.idle():
        assert __import__("time").monotonic() < deadline, f"downloads stuck: {dl.in_flight()}"
        done.wait(0.05)


def test_full_course_downloads_and_verifies(setup):
    server, catalog, cache, dl = setup
    _download_all(dl, catalog)
    for item in catalog.items().values():
        assert cache.has(item.sha256)
        assert hashlib.sha256(cache.path(item.sha256).read_bytes()).hexdigest() == item.sha256
    assert dl.counters["items_completed"] == 2
    assert max(server.served.values()) == 1  # every chunk exactly once
    assert not list(cache.partial.iterdir())


def test_corrupt_chunk_is_refetched_never_stored(setup):
    server, catalog, cache, dl = setup
    item = catalog.courses[0].items[0]
    server.inject_corruption(item.sha256, 3)
    _download_all(dl, catalog)
    assert dl.counters["chunks_corrupt"] == 1
    assert server.served[(item.sha256, 3)] == 2
    assert hashlib.sha256(cache.path(item.sha256).read_bytes()).hexdigest() == item.sha256


def test_resume_skips_verified_chunks(setup):
    server, catalog, cache, dl = setup
    item = catalog.courses[0].items[0]
    data = (server.folder / "c1" / item.name).read_bytes()
    for index in (0, 1, 4):  # as if a previous run stored these before it was killed
        cache.write_chunk(item.sha256, index, CHUNK, data[index * CHUNK:(index + 1) * CHUNK])
    cache.write_chunk(item.sha256, 2, CHUNK, b"\0" * CHUNK)  # a torn write: not trusted
    dl.enqueue(item, catalog.chunk_size, "c1")
    _download_all(dl, catalog)
    fetched = {i for (sha, i) in server.served if sha == item.sha256}
    assert fetched == {2, 3, 5}
    assert cache.path(item.sha256).read_bytes() == data


def test_token_bucket_caps_rate():
    import time
    bucket, stop = TokenBucket(1_000_000, 100_000), threading.Event()
    started = time.monotonic()
    for _ in range(6):
        bucket.take(100_000, stop)
    assert time.monotonic() - started >= 0.45  # 600 kB at 1 MB/s, minus the 100 kB burst


def test_no_chunk_moves_while_may_proceed_says_no(tmp_path, mosquitto):
    import time

    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"a.bin": 3 * CHUNK}})
    server = start_server(mosquitto, folder, SITE, key)
    catalog = parse_catalog(server.publish_catalog(version=1), signing.load_public_keys([pub]), SITE)
    link = StandaloneLink(mosquitto.uri, client_id=DEVICE).start()
    gate = threading.Event()
    dl = Downloader(link=link, site=SITE, device=DEVICE, cache=ContentCache(tmp_path / "c", 1 << 30),
                    concurrency=1, rate_limit_bytes_s=0, chunk_timeout_s=5, may_proceed=gate.is_set)
    dl.start()
    try:
        dl.enqueue(catalog.courses[0].items[0], catalog.chunk_size, "c1")
        deadline = time.monotonic() + 10
        while not dl.paused and time.monotonic() < deadline:
            gate.wait(0.02)
        assert dl.paused and sum(server.served.values()) == 0  # security events hold the uplink
        gate.set()
        while not dl.idle() and time.monotonic() < deadline + 10:
            gate.wait(0.02)
        assert dl.counters["items_completed"] == 1
    finally:
        dl.stop()
        link.stop()
        server.stop()
        server.link.stop()
