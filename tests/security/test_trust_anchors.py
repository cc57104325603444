"""Red team: whatever lands in the trust folder, a gate trusts public keys only, each for its roles.

A private key, an unparsable file, the same key twice, a file others can read or
a key with no roles file stops ``edge run`` at start (exit 78, the file named);
``edge doctor`` and ``edge keys`` say the same. Positive control: proper anchors start.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from edge.signing import generate_keypair

SITE = "site-1"


def _config(base_config, *paths) -> dict:
    base_config["trust"] = {"central_keys": [str(p) for p in paths]}
    return base_config


def _refused_at_start(edge_daemon, config) -> str:
    daemon = edge_daemon(config, start=False)
    run = daemon.cli("run", timeout=60)
    assert run.returncode == 78, (run.returncode, run.stderr[-2000:])
    return run.stderr


def _private_in_trust_folder(folder):
    key, pub, _ = generate_keypair(folder, "ops", ["command"])
    shutil.copy(pub.with_name("ops.pub.json"), key.with_name("ops.key.json"))
    return key


def _world_readable(folder):
    _, pub, _ = generate_keypair(folder, "ops", ["command"])
    os.chmod(pub, 0o644)
    return pub


def _garbage(folder):
    _, pub, _ = generate_keypair(folder, "ops", ["command"])
    pub.write_text("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    return pub


def _no_roles(folder):
    _, pub, _ = generate_keypair(folder, "ops", ["command"])
    pub.with_name("ops.pub.json").unlink()
    return pub


@pytest.mark.parametrize("make, says", [
    (_private_in_trust_folder, "holds a PRIVATE key"),
    (_world_readable, "readable or writable by others"),
    (_garbage, "not a parsable PEM public key"),
    (_no_roles, "has no roles file"),
])
def test_bad_anchor_stops_the_daemon_naming_the_file(tmp_path, edge_daemon, base_config, make, says):
    path = make(tmp_path / "trust")
    stderr = _refused_at_start(edge_daemon, _config(base_config, path))
    assert says in stderr and str(path) in stderr and "trust.central_keys[0]" in stderr


def test_duplicate_fingerprint_is_refused(tmp_path, edge_daemon, base_config):
    _, pub, _ = generate_keypair(tmp_path / "trust", "ops", ["command"])
    copy = tmp_path / "trust" / "ops-copy.pub"
    shutil.copy(pub, copy)
    shutil.copy(pub.with_name("ops.pub.json"), copy.with_name("ops-copy.pub.json"))
    stderr = _refused_at_start(edge_daemon, _config(base_config, pub, copy))
    assert "duplicate key" in stderr and str(copy) in stderr and str(pub) in stderr


def test_doctor_and_keys_report_the_same(tmp_path, edge_daemon, base_config):
    _, good, kid = generate_keypair(tmp_path / "trust", "ops", ["command"])
    bad = _private_in_trust_folder(tmp_path / "other")
    daemon = edge_daemon(_config(base_config, good, bad), start=False)
    doctor = daemon.cli("doctor", "--only", "trust", "--json")
    checks = json.loads(doctor.stdout)["checks"]
    assert doctor.returncode == 1
    assert [c["ok"] for c in checks] == [True, False] and "PRIVATE" in checks[1]["detail"]
    assert checks[1]["target"] == str(bad)
    listed = daemon.cli("keys", "--json")
    assert listed.returncode == 78 and "PRIVATE" in listed.stdout


def test_proper_anchors_start_and_are_listed_with_roles(tmp_path, edge_daemon, base_config):
    _, ops, kid = generate_keypair(tmp_path / "trust", "ops", ["command"])
    _, courses, _ = generate_keypair(tmp_path / "trust", "courses", ["catalog"])
    daemon = edge_daemon(_config(base_config, ops, courses))
    listed = json.loads(daemon.cli("keys", "--json").stdout)["keys"]
    assert [(k["key_id"], k["roles"], k["revoked"]) for k in listed][0] == (kid, ["command"], False)
    assert listed[1]["roles"] == ["catalog"] and len(listed[0]["fingerprint"]) == 64
    doctor = daemon.cli("doctor", "--only", "packages", "--json")
    assert "cryptography" in json.loads(doctor.stdout)["checks"][0]["detail"]


def test_config_check_refuses_the_same_anchors(tmp_path, edge_daemon, base_config):
    bad = _private_in_trust_folder(tmp_path / "trust")
    daemon = edge_daemon(_config(base_config, bad), start=False)
    checked = daemon.cli("config", "check", "--json")
    assert checked.returncode == 78 and "PRIVATE" in " ".join(json.loads(checked.stdout)["errors"])
