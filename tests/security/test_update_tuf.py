"""TUF's attacks on the release channel, against a real repository served over HTTP.

Each attack gets the refusal code the device reports (``update.refused``), and each
has its positive control: the same repository, untouched, gives the release.
"""

from __future__ import annotations

import shutil

import pytest

from edge.update.repo import target_path
from edge.update.settings import UpdateSettings
from edge.update.tuf_client import ReleaseSource, UpdateRefused
from tests._update_helpers import RepoServer, new_repo, shim_running_this_edge, tamper, wheelhouse


@pytest.fixture
def served(tmp_path):
    repo = new_repo(tmp_path / "central")
    server = RepoServer(repo.folder)
    yield repo, server
    server.stop()


def _source(tmp_path, repo, server, *, group="default", site="site-1", cache="device") -> ReleaseSource:
    trusted = tmp_path / "tuf-root.json"
    if not trusted.exists():
        shutil.copyfile(repo.meta_dir / "1.root.json", trusted)
    settings = UpdateSettings(metadata_url=f"{server.url}/metadata/", targets_url=f"{server.url}/targets/",
                              trusted_root=trusted, rollout_group=group)
    return ReleaseSource(settings, device_class="gate", site=site, cache_dir=tmp_path / cache)


def _publish(tmp_path, repo, version, group="all"):
    archive = wheelhouse(tmp_path / "build", version, shim_running_this_edge())
    repo.publish("gate", group, archive, version)
    return archive


def test_good_release_is_found_and_downloads_verified(tmp_path, served):
    repo, server = served
    archive = _publish(tmp_path, repo, "0.2.0")
    source = _source(tmp_path, repo, server)
    offer = source.find()
    assert (offer.version, offer.group) == ("0.2.0", "all")
    got = source.download(offer, tmp_path / "dl.tar.gz")
    assert got.read_bytes() == archive.read_bytes()


def test_rollout_groups_canary_then_site_then_all(tmp_path, served):
    repo, server = served
    _publish(tmp_path, repo, "0.2.0", "all")
    _publish(tmp_path, repo, "0.3.0", "canary")
    assert _source(tmp_path, repo, server, cache="a").find().version == "0.2.0"
    assert _source(tmp_path, repo, server, group="canary", cache="b").find().version == "0.3.0"
    _publish(tmp_path, repo, "0.3.0", "site-site-1")
    assert _source(tmp_path, repo, server, cache="c").find().version == "0.3.0"
    other_site = _source(tmp_path, repo, server, site="site-2", cache="d").find()
    assert other_site.version == "0.2.0"


def test_no_release_offered_is_none(tmp_path, served):
    repo, server = served
    assert _source(tmp_path, repo, server).find() is None


def test_metadata_rollback_is_refused(tmp_path, served):
    """The device saw snapshot/timestamp N; the server later offers N-1 (replayed old files)."""
    repo, server = served
    old = {name: (repo.meta_dir / name).read_bytes() for name in ("timestamp.json", "snapshot.json")}
    _publish(tmp_path, repo, "0.2.0")
    assert _source(tmp_path, repo, server).find().version == "0.2.0"
    for name, data in old.items():
        (repo.meta_dir / name).write_bytes(data)
    with pytest.raises(UpdateRefused) as refused:
        _source(tmp_path, repo, server).find()
    assert refused.value.problem == "version"


def test_expired_timestamp_is_refused_as_a_freeze(tmp_path, served):
    repo, server = served
    _publish(tmp_path, repo, "0.2.0")
    repo.timestamp(days=-1)
    with pytest.raises(UpdateRefused) as refused:
        _source(tmp_path, repo, server).find()
    assert refused.value.problem == "expired"
    repo.timestamp()  # control: a fresh timestamp and the release is offered again
    assert _source(tmp_path, repo, server).find().version == "0.2.0"


def test_targets_signed_by_the_wrong_role_are_refused(tmp_path, served):
    """The canary key signs the 'all' delegation: its release must not reach everyone."""
    repo, server = served
    archive = _publish(tmp_path, repo, "0.2.0", "all")
    md = repo.load("gate.all")
    md.signed.targets[target_path("gate", "all")].unrecognized_fields["custom"]["version"] = "9.0.0"
    repo.write("gate.all", md, signer_role="gate.canary")
    repo.snapshot()
    with pytest.raises(UpdateRefused) as refused:
        _source(tmp_path, repo, server).find()
    assert refused.value.problem == "signature"
    assert archive.exists()


def test_top_level_targets_signed_by_snapshot_key_are_refused(tmp_path, served):
    repo, server = served
    md = repo.load("targets")
    repo.write("targets", md, signer_role="snapshot")
    repo.snapshot()
    with pytest.raises(UpdateRefused) as refused:
        _source(tmp_path, repo, server).find()
    assert refused.value.problem == "signature"


def test_tampered_archive_is_refused(tmp_path, served):
    repo, server = served
    _publish(tmp_path, repo, "0.2.0")
    source = _source(tmp_path, repo, server)
    offer = source.find()
    tamper(repo.targets_dir / offer.path)
    with pytest.raises(UpdateRefused) as refused:
        source.download(offer, tmp_path / "dl.tar.gz")
    assert refused.value.problem == "hash_mismatch"
    assert not (tmp_path / "dl.tar.gz").exists()


def test_mix_and_match_snapshot_and_targets_is_refused(tmp_path, served):
    """A current snapshot served with an older targets file than the one it lists."""
    repo, server = served
    old_targets = (repo.meta_dir / "targets.json").read_bytes()
    repo.write("targets", repo.load("targets"))
    repo.snapshot()
    (repo.meta_dir / "targets.json").write_bytes(old_targets)
    with pytest.raises(UpdateRefused) as refused:
        _source(tmp_path, repo, server).find()
    assert refused.value.problem == "version"


def test_unreachable_repository_is_reported_not_raised_raw(tmp_path, served):
    repo, server = served
    source = _source(tmp_path, repo, server)
    server.stop()
    with pytest.raises(UpdateRefused) as refused:
        source.find()
    assert refused.value.problem == "unreachable"


@pytest.mark.parametrize("role", ["timestamp", "root"])
def test_keys_rotate_through_tuf_and_the_old_key_is_then_refused(tmp_path, served, role):
    """The shipped root stays the anchor: a new root signed by the old one moves trust on."""
    repo, server = served
    _publish(tmp_path, repo, "0.2.0")
    assert _source(tmp_path, repo, server).find().version == "0.2.0"
    old_key = (repo.keys_dir / f"{role}.key").read_bytes()
    repo.rotate_key(role)
    assert _source(tmp_path, repo, server).find().version == "0.2.0"  # follows the rotation
    (repo.keys_dir / f"{role}.key.new").write_bytes((repo.keys_dir / f"{role}.key").read_bytes())
    (repo.keys_dir / f"{role}.key").write_bytes(old_key)  # a thief with the retired key
    if role == "timestamp":
        repo.timestamp()
    else:
        root = repo.load("root")
        repo.write("root", root)  # root v3 signed by the retired root key alone
    with pytest.raises(UpdateRefused) as refused:
        _source(tmp_path, repo, server).find()
    assert refused.value.problem == "signature"
