"""Catalog verification and the content cache, on real files."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest

from edge import signing
from services.learning._cache import ContentCache, CorruptContent, QuotaExceeded
from services.learning._catalog import CatalogKeeper, CatalogRejected
from services.learning.server import ContentServer
from tests._learning_helpers import CHUNK, central_key, make_folder

SITE = "site-1"


class _NoLink:
    def publish(self, *a, **k):
        pass


@pytest.fixture
def signed(tmp_path):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {"c1": {"a.bin": 3 * CHUNK}, "c2": {"b.bin": CHUNK + 5}})
    server = ContentServer(_NoLink(), folder, SITE, key, chunk_size=CHUNK)
    trusted = signing.load_public_keys([pub])
    return server, trusted, tmp_path


def test_newer_catalog_replaces_forged_and_older_rejected(signed):
    server, trusted, tmp = signed
    keeper = CatalogKeeper(tmp / "state" / "catalog.json", trusted, SITE)
    assert keeper.offer(server.build_catalog(version=2)).version == 2
    assert keeper.offer(server.build_catalog(version=2)) is None  # a retained repeat
    assert keeper.offer(server.build_catalog(version=1)) is None  # a replay of an older one
    forged = server.build_catalog(version=3)
    forged["courses"][0]["title"] = "changed after signing"
    with pytest.raises(CatalogRejected, match="signature"):
        keeper.offer(forged)
    other_key, _, _ = central_key(tmp, "impostor")
    with pytest.raises(CatalogRejected, match="not trusted"):
        keeper.offer(signing.sign({k: v for k, v in forged.items() if k != "signatures"}, other_key))
    assert keeper.current.version == 2
    # What was kept survives a restart, and re-verifies.
    assert CatalogKeeper(tmp / "state" / "catalog.json", trusted, SITE).current.version == 2


def test_malformed_or_foreign_catalogs_are_refused_with_reason(signed):
    server, trusted, tmp = signed
    keeper = CatalogKeeper(tmp / "catalog.json", trusted, SITE)
    doc = server.build_catalog(version=5)
    bad = copy.deepcopy({k: v for k, v in doc.items() if k != "signatures"})
    bad["courses"][0]["items"][0]["chunks"] = bad["courses"][0]["items"][0]["chunks"][:1]
    with pytest.raises(CatalogRejected, match="chunk hashes"):
        keeper.offer(signing.sign(bad, server.key))
    foreign = {**{k: v for k, v in doc.items() if k != "signatures"}, "site": "elsewhere"}
    with pytest.raises(CatalogRejected, match="site"):
        keeper.offer(signing.sign(foreign, server.key))
    with pytest.raises(CatalogRejected, match="not JSON"):
        keeper.offer(b"{nope")
    assert keeper.current is None


def _put(cache: ContentCache, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    cache.reserve(sha, len(data), set())
    cache.write_chunk(sha, 0, len(data), data)
    cache.commit(sha, len(data))
    return sha


def test_quota_evicts_unpinned_lru_never_pinned(tmp_path):
    cache = ContentCache(tmp_path, quota_bytes=1024 * 1024 + 10)
    pinned = _put(cache, os.urandom(400_000))
    old = _put(cache, os.urandom(300_000))
    recent = _put(cache, os.urandom(300_000))
    os.utime(cache.path(old), (1, 1))  # read long ago
    new = os.urandom(300_000)
    sha_new = hashlib.sha256(new).hexdigest()
    cache.reserve(sha_new, len(new), {pinned})
    assert not cache.has(old) and cache.has(recent) and cache.has(pinned)
    with pytest.raises(QuotaExceeded, match="quota"):
        cache.reserve("f" * 64, 900_000, {pinned, recent})
    assert cache.has(pinned) and cache.has(recent)


def test_commit_refuses_wrong_content_and_read_detects_corruption(tmp_path):
    cache = ContentCache(tmp_path, quota_bytes=10 * 1024 * 1024)
    sha = "0" * 64
    cache.write_chunk(sha, 0, 10, b"not that content")
    with pytest.raises(CorruptContent):
        cache.commit(sha, 16)
    assert not cache.has(sha) and not cache.part_path(sha).exists()

    good = _put(cache, b"x" * 5000)
    fresh = ContentCache(tmp_path, quota_bytes=10 * 1024 * 1024)  # a restart: not verified yet
    with open(fresh.path(good), "r+b") as f:
        f.write(b"y")  # bit rot on the eMMC
    with pytest.raises(CorruptContent):
        fresh.open_for_read(good)
    assert not fresh.has(good) and not fresh.path(good).exists()


def test_scrub_finds_corruption_within_budget(tmp_path):
    cache = ContentCache(tmp_path, quota_bytes=10 * 1024 * 1024)
    shas = sorted(_put(cache, os.urandom(10_000)) for _ in range(4))
    with open(cache.path(shas[3]), "r+b") as f:
        f.write(b"\0\0\0\0")
    corrupt, resume = cache.scrub(20_000)
    assert corrupt == [] and resume == shas[1]  # budget spent after two items
    corrupt, resume = cache.scrub(20_000, resume)
    assert corrupt == [shas[3]] and not cache.has(shas[3])


def test_catalog_file_is_the_signed_document(signed):
    server, trusted, tmp = signed
    keeper = CatalogKeeper(tmp / "c.json", trusted, SITE)
    doc = server.build_catalog(version=9)
    keeper.offer(json.dumps(doc).encode())
    assert signing.verify(json.loads((tmp / "c.json").read_bytes()), trusted)
