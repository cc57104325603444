"""Issue 17 acceptance, part 4: keys live apart from the data, and an exposed key stops the daemon."""

from __future__ import annotations

import pytest

from edge import secrets
from edge._fs import KeyFileError


def _config(tmp_path) -> dict:
    return {"device_id": "tab-1", "site": "site-1", "role": "tablet", "drivers": [],
            "logging": {"level": "info", "format": "json"}}


def test_keys_are_in_the_secrets_folder_and_a_world_readable_key_is_refused_at_start(edge_daemon, tmp_path):
    daemon = edge_daemon(_config(tmp_path))
    assert daemon.stop() == 0
    folder = daemon.state_dir / "secrets"
    names = sorted(p.name for p in folder.iterdir())
    assert {"audit.key", "mailbox.key", "seal.key", "login.salt"} <= set(names)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all((folder / n).stat().st_mode & 0o777 == 0o600 for n in names)
    beside = [p for p in daemon.state_dir.rglob("*.key") if p.parent != folder]
    assert beside == []  # no key beside the database it protects

    for name in ("audit.key", "seal.key"):
        (folder / name).chmod(0o644)
        with pytest.raises(RuntimeError) as refused:
            daemon.start()
        assert f"chmod 600 {folder / name}" in str(refused.value), str(refused.value)[-800:]
        (folder / name).chmod(0o600)
    folder.chmod(0o755)
    with pytest.raises(RuntimeError) as refused:
        daemon.start()
    assert f"chmod 700 {folder}" in str(refused.value)
    folder.chmod(0o700)
    daemon.start()  # positive control: fixed as told, it starts
    assert daemon.stop() == 0


def test_keys_beside_their_database_move_into_the_folder_once(tmp_path):
    old = tmp_path / "messaging" / "mailbox.key"
    old.parent.mkdir()
    old.write_bytes(b"k" * 32)
    old.chmod(0o600)
    assert secrets.key(tmp_path, "mailbox.key", legacy=old) == b"k" * 32
    assert not old.exists() and (tmp_path / "secrets" / "mailbox.key").read_bytes() == b"k" * 32
    assert secrets.key(tmp_path, "mailbox.key", legacy=old) == b"k" * 32


def test_systemd_credentials_win_and_nothing_is_written(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "audit.key").write_bytes(b"c" * 32)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert secrets.key(tmp_path / "state", "audit.key") == b"c" * 32
    assert not (tmp_path / "state" / "secrets" / "audit.key").exists()
    (creds / "audit.key").write_bytes(b"short")
    with pytest.raises(KeyFileError, match="expected 32 bytes"):
        secrets.key(tmp_path / "state", "audit.key")
