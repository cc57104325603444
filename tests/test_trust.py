"""The trust API other subsystems call: roles per document type, expiry, live revocation; cosign."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from edge import signing
from edge.cli import cli
from edge.trust import TrustRefused, TrustStore, load_anchors, role_for, write_roles


@pytest.fixture
def anchors(tmp_path):
    made = {}
    for name, roles in (("ops", ["command"]), ("deploy", ["config", "update"]), ("old", ["command"])):
        key, pub, kid = signing.generate_keypair(tmp_path, name, roles)
        made[name] = (signing.load_private_key(key), pub, kid)
    write_roles(made["old"][1], ["command"], expires=datetime.now(UTC) - timedelta(days=1))
    return made


def _store(anchors, tmp_path) -> TrustStore:
    return TrustStore(load_anchors([a[1] for a in anchors.values()]), tmp_path / "revocations.json")


def test_check_accepts_only_signers_holding_the_role(anchors, tmp_path):
    store = _store(anchors, tmp_path)
    config = signing.sign({"type": "config", "v": 1}, anchors["deploy"][0])
    assert store.check(config, "config") == [anchors["deploy"][2]]
    assert store.check(config, "update") == [anchors["deploy"][2]]
    with pytest.raises(TrustRefused) as info:
        store.check(config, "command")
    assert info.value.problem == "wrong_role" and "'command'" in info.value.detail
    with pytest.raises(TrustRefused) as info:
        store.check(signing.sign({"x": 1}, anchors["old"][0]), "command")
    assert info.value.problem == "bad_signature" and "expired" in info.value.detail
    assert role_for("contacts") == "directory"
    with pytest.raises(KeyError):
        role_for("horoscope")


def test_keys_for_plugs_into_open_signed_and_sees_revocations_at_once(anchors, tmp_path):
    store = _store(anchors, tmp_path)
    keys = store.keys_for("update")
    doc = signing.sign({"type": "update", "site": "s"}, anchors["deploy"][0])
    assert signing.open_signed(json.dumps(doc), keys, None, "update", site="s")["type"] == "update"
    with pytest.raises(signing.DocumentRejected):
        signing.open_signed(json.dumps(signing.sign({"site": "s"}, anchors["ops"][0])), keys, None, "update")
    # Another process (the daemon) writes the list; this store sees it on the next lookup.
    other = _store(anchors, tmp_path)
    fp = other.anchors[anchors["deploy"][2]].fingerprint
    other.install_revocations({"serial": 1, "revoked": [{"fingerprint": fp}]})
    with pytest.raises(signing.DocumentRejected):
        signing.open_signed(json.dumps(doc), keys, None, "update")


def test_holders_are_told_when_a_list_revokes_a_key_and_only_then(anchors, tmp_path):
    store = _store(anchors, tmp_path)
    told = []

    def broken():
        raise RuntimeError("a holder's bug")

    store.on_revocations(broken)  # fails first: the next holder is still told
    store.on_revocations(lambda: told.append(store.revoked()))
    fp = store.anchors[anchors["ops"][2]].fingerprint
    store.install_revocations({"serial": 1, "revoked": [{"fingerprint": fp}]})
    assert told == [frozenset({fp})]  # the new list is in force when the holder checks again
    store.install_revocations({"serial": 2, "revoked": [{"fingerprint": fp}]})  # adds nothing
    assert len(told) == 1


def test_roles_file_must_match_the_key(anchors, tmp_path):
    from edge.trust import TrustAnchorError

    write_roles(anchors["ops"][1], ["command"], kid="0" * 16)
    with pytest.raises(TrustAnchorError) as info:
        load_anchors([anchors["ops"][1]])
    assert "is for key 0000000000000000" in info.value.lines[0]


def test_two_people_sign_on_two_machines(tmp_path, anchors):
    runner = CliRunner()
    out = tmp_path / "unlock.json"
    ops_key = str(tmp_path / "ops.key")
    first = runner.invoke(cli, ["cmd", "sign", "--key", ops_key, "--target", "lane1", "--name", "unlock",
                                "--device", "gate-1", "--ttl", "600", "--out", str(out)])
    assert first.exit_code == 0, first.output
    same = runner.invoke(cli, ["cmd", "cosign", str(out), "--key", ops_key])
    assert same.exit_code == 1 and "already signed" in same.output
    doc = json.loads(out.read_text())
    doc["args"] = {"hold_open_s": 3600}  # changed after the first signature
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    refused = runner.invoke(cli, ["cmd", "cosign", str(tampered), "--key", str(tmp_path / "deploy.key"),
                                  "--signer-pub", str(tmp_path / "ops.pub")])
    assert refused.exit_code == 1 and "does not cover this content" in refused.output
    second = runner.invoke(cli, ["cmd", "cosign", str(out), "--key", str(tmp_path / "deploy.key"),
                                 "--signer-pub", str(tmp_path / "ops.pub"), "--json"])
    assert second.exit_code == 0, second.output
    signed = json.loads(out.read_text())
    assert [s["key_id"] for s in signed["signatures"]] == [anchors["ops"][2], anchors["deploy"][2]]


def test_a_command_key_cannot_publish_a_catalog_and_a_catalog_key_can(tmp_path):
    from services.learning._catalog import CatalogKeeper, CatalogRejected
    from services.learning.server import ContentServer
    from tests._learning_helpers import CHUNK, make_folder

    class _NoLink:
        def publish(self, *a, **kw):
            return None

    ops_key, ops_pub, _ = signing.generate_keypair(tmp_path / "k", "ops", ["command"])
    cat_key, cat_pub, _ = signing.generate_keypair(tmp_path / "k", "courses", ["catalog"])
    store = TrustStore(load_anchors([ops_pub, cat_pub]))
    folder = make_folder(tmp_path, {"c1": {"a.bin": CHUNK}})
    keeper = CatalogKeeper(tmp_path / "state" / "catalog.json", store.keys_for("catalog"), "site-1")
    by_ops = ContentServer(_NoLink(), folder, "site-1", signing.load_private_key(ops_key), chunk_size=CHUNK)
    with pytest.raises(CatalogRejected, match="not trusted"):
        keeper.offer(by_ops.build_catalog(version=1))
    by_courses = ContentServer(_NoLink(), folder, "site-1", signing.load_private_key(cat_key), chunk_size=CHUNK)
    assert keeper.offer(by_courses.build_catalog(version=1)).version == 1
