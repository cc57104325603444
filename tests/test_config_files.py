"""Every file and folder a config names is checked by `config check` and at start: a missing
or unreadable one is exit 78 naming the key and the file, never a daemon that retries forever."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge.testing.daemon import dump_toml


def _edge(*args, timeout=20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def config(tmp_path, base_config):
    def write(**sections) -> str:
        data = {**base_config, **sections}
        path = tmp_path / "edge.toml"
        path.write_text(dump_toml(data))
        return str(path)
    return write


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file", "password_file"])
def test_a_missing_mqtt_file_is_a_config_error_naming_key_and_file(config, tmp_path, key):
    path = config(mqtt={"brokers": ["mqtts://127.0.0.1:8883"], key: str(tmp_path / "nope" / "x.pem")})
    r = _edge("config", "check", path)
    assert r.returncode == 78, r.stderr
    assert f"mqtt.{key}: {tmp_path / 'nope' / 'x.pem'} not found" in r.stdout + r.stderr


def test_edge_run_refuses_to_start_on_a_missing_ca_file(config, tmp_path):
    path = config(mqtt={"brokers": ["mqtts://127.0.0.1:8883"], "ca_file": "/nonexistent/ca.pem"})
    r = _edge("--config", path, "run", timeout=30)
    assert r.returncode == 78
    assert "mqtt.ca_file: /nonexistent/ca.pem not found" in r.stdout + r.stderr
    assert not (tmp_path / "state" / "events.db").exists(), "nothing may start on a bad config"


def test_trust_keys_and_seal_key_are_checked_each_by_index(config, tmp_path):
    good = tmp_path / "central.pub"
    good.write_text("not checked here: only presence and readability")
    path = config(trust={"central_keys": [str(good), str(tmp_path / "gone.pub")]},
                  messaging={"central_seal_key": str(tmp_path / "seal.pem")})
    r = _edge("config", "check", path, "--json")
    assert r.returncode == 78
    assert f"trust.central_keys[1]: {tmp_path / 'gone.pub'} not found" in r.stdout + r.stderr
    assert "central_keys[0]" not in r.stderr + r.stdout
    assert f"messaging.central_seal_key: {tmp_path / 'seal.pem'} not found" in r.stdout + r.stderr


def test_a_folder_where_a_file_is_expected_and_an_unreadable_file(config, tmp_path):
    (tmp_path / "ca_dir").mkdir()
    locked = tmp_path / "cert.pem"
    locked.write_text("x")
    locked.chmod(0)
    path = config(mqtt={"brokers": ["mqtts://127.0.0.1:8883"], "ca_file": str(tmp_path / "ca_dir"),
                        "cert_file": str(locked)})
    r = _edge("config", "check", path)
    assert r.returncode == 78
    assert f"mqtt.ca_file: {tmp_path / 'ca_dir'} is a folder; expected a file" in r.stdout + r.stderr
    if os.geteuid() != 0:  # root reads any file: the mode cannot stop it
        assert f"mqtt.cert_file: {locked} is not readable" in r.stdout + r.stderr


def test_a_scanner_folder_that_cannot_be_made_is_named_with_its_driver(config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    path = config(drivers=[{"name": "scanner1", "kind": "xray.folder", "path": str(blocker / "inbox")}])
    r = _edge("config", "check", path)
    assert r.returncode == 78
    assert f"drivers[0] (scanner1).path: {blocker / 'inbox'} cannot be made: {blocker} is not a folder" in r.stdout + r.stderr


def test_positive_control_present_files_and_a_creatable_scanner_folder_pass(config, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    path = config(mqtt={"brokers": ["mqtts://127.0.0.1:8883"], "ca_file": str(ca)},
                  drivers=[{"name": "scanner1", "kind": "xray.folder", "path": str(tmp_path / "new" / "inbox")}])
    r = _edge("config", "check", path)
    assert r.returncode == 0, r.stderr


def test_doctor_names_the_missing_file(config, tmp_path):
    path = config(mqtt={"brokers": ["mqtts://127.0.0.1:1"], "ca_file": "/nonexistent/ca.pem"})
    r = _edge("--config", path, "doctor", "--json", timeout=60)
    assert r.returncode == 1
    assert "/nonexistent/ca.pem" in r.stdout
