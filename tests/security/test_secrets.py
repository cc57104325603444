"""Issue 17 acceptance, part 4: keys live apart from the data, and an exposed key stops the daemon."""

from __future__ import annotations

import os

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


def test_a_key_once_taken_from_a_credential_is_never_silently_replaced(tmp_path, monkeypatch):
    """The credential store lost (OS reinstalled, TPM reset): refuse, rather than make a new key
    and lose the mailbox or fork the audit chain; the fix is named."""
    creds, state = tmp_path / "creds", tmp_path / "state"
    creds.mkdir()
    (creds / "mailbox.key").write_bytes(b"m" * 32)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert secrets.key(state, "mailbox.key") == b"m" * 32
    marker = state / "secrets" / "mailbox.key.credential"
    assert marker.read_bytes() == b"" and not (state / "secrets" / "mailbox.key").exists()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(KeyFileError, match="/etc/credstore.encrypted/edge.mailbox.key") as refused:
        secrets.key(state, "mailbox.key")
    assert f"rm {marker}" in str(refused.value) and not (state / "secrets" / "mailbox.key").exists()
    with pytest.raises(KeyFileError, match="systemd-run .*LoadCredentialEncrypted=mailbox.key:edge.mailbox.key"):
        secrets.read(state, "mailbox.key")  # a CLI command run beside the service
    # Positive control: a key that never came from a credential is made as before...
    assert len(secrets.key(state, "audit.key")) == 32
    marker.unlink()  # ...and so is this one, once the engineer chose to start over
    assert len(secrets.key(state, "mailbox.key")) == 32
    with pytest.raises(ValueError, match="NAMES"):
        secrets.key(state, "other.key")  # every key is one the unit loads


def test_the_daemon_takes_every_key_from_the_credentials_the_unit_loads(edge_daemon, tmp_path):
    from tests.test_systemd import _credentials

    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    for _, name, _ in _credentials():  # what systemd decrypts into $CREDENTIALS_DIRECTORY
        (creds / name).write_bytes(os.urandom(16 if name == "login.salt" else 32))
    daemon = edge_daemon(_config(tmp_path), env={"CREDENTIALS_DIRECTORY": str(creds)})
    # A prompt stop, too: its main loop slept through a SIGTERM the kernel gave another thread
    # (edge._wakeup), to its 10 s tick, about four times in five here.
    assert daemon.stop(timeout=5) == 0, daemon.log_tail()
    folder = daemon.state_dir / "secrets"
    taken = sorted(p.name for p in folder.iterdir())
    assert [n for n in taken if not n.endswith(".credential")] == []  # no key written beside them
    # A tablet: every key but the gate's gallery.key, each taken from its credential.
    assert taken == sorted(f"{n}.credential" for n in secrets.NAMES if n != "gallery.key")
    daemon.env = {}  # the credential store is gone
    with pytest.raises(RuntimeError) as refused:
        daemon.start()
    assert "/etc/credstore.encrypted/edge.audit.key" in str(refused.value), str(refused.value)[-800:]
    daemon.env = {"CREDENTIALS_DIRECTORY": str(creds)}
    daemon.start()  # positive control: restored, it starts with the same keys
    assert daemon.stop() == 0
