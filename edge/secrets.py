"""Where the device's secret keys live: one private folder, never beside what they protect.

``state_dir/secrets/`` (mode 0700, files 0600, owned by the daemon's user) holds
every key: the audit chain's, the mailbox's, the gallery's, the login-guard salt
and the device's seal key. A copy of ``messaging/`` or ``biometrics/`` alone
then decrypts nothing, and the folder can be put on other storage, backed up
apart, or replaced by systemd credentials: when ``$CREDENTIALS_DIRECTORY`` (set by
``LoadCredentialEncrypted=`` in systemd/edge.service, TPM-bound where the device
has one) holds a file of the key's name, that is used instead and no key is
written. ``NAMES`` lists every key; the shipped unit loads exactly these
(tests/test_systemd.py).

A key once taken from a credential is remembered (``secrets/NAME.credential``,
empty): if the credential is missing on a later start, the daemon refuses to
start rather than make a fresh key and lose what the old one protects.

Start-up refuses a secrets folder or key file that group or others can read,
and says the command that fixes it. Keys found at their old places (beside the
database) are moved into the folder once, on first start after the upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge._fs import KeyFileError, fsync_dir, secret_key

FOLDER = "secrets"
# Every key a device may hold, by its file and credential name (systemd/edge.service loads each
# from /etc/credstore.encrypted/edge.NAME). A key not listed here is refused: add it to both.
NAMES = ("audit.key", "mailbox.key", "gallery.key", "seal.key", "login.salt")
CREDSTORE = "/etc/credstore.encrypted"


def _log():
    """structlog, imported for the rare line here: the face worker reads keys and carries none."""
    import structlog

    return structlog.get_logger("edge.secrets")


def folder(state_dir: str | os.PathLike, create: bool = True) -> Path:
    """The secrets folder, made 0700 if missing; refused if group or others may enter it."""
    path = Path(state_dir) / FOLDER
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except PermissionError:
            raise KeyFileError(f"{path}: cannot create the secrets folder (permission denied); run this "
                               "as the user the edge service runs as") from None
    if path.exists():
        loose = path.stat().st_mode & 0o077
        if loose:
            raise KeyFileError(f"{path}: the secrets folder is open to group/others (mode {oct(loose)}); "
                               f"run: chmod 700 {path}")
    return path


def _credential(name: str, nbytes: int | None = None) -> bytes | None:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds or not (Path(creds) / name).is_file():
        return None
    data = (Path(creds) / name).read_bytes()
    if nbytes is not None and len(data) != nbytes:
        raise KeyFileError(f"systemd credential {name}: expected {nbytes} bytes, found {len(data)}")
    return data


def _missing_credential(path: Path, name: str, cli: bool = False) -> KeyFileError:
    where = f"{CREDSTORE}/edge.{name}"
    if cli:  # the credential is only loaded into the service; a command run beside it has none
        return KeyFileError(f"{name} is the systemd credential {where} on this device; run this command "
                            f"through systemd: systemd-run --pipe --wait -p User=edge "
                            f"-p LoadCredentialEncrypted={name}:edge.{name} /opt/edge/bin/edge ...")
    return KeyFileError(
        f"{name}: this device took it from the systemd credential {where} before, and it is not loaded "
        f"now; restore that file (systemd-creds encrypt, docs/secrets.md) and restart. Only to go back to "
        f"a key file in {path.parent} (or a new key: what the old one protects is lost): rm {path}.credential")


def _remember_credential(path: Path) -> None:
    marker = path.with_name(path.name + ".credential")
    if marker.exists():
        return
    marker.touch(mode=0o600)
    fsync_dir(path.parent)
    if path.exists():  # the credential wins; a stale copy beside it only confuses a restore
        _log().warning("secret_file_shadowed_by_credential", key=path.name)


def _adopt(legacy: Path | None, path: Path) -> None:
    """Move a key from beside its database into the folder (once, keeping the same key)."""
    if legacy is None or not legacy.exists() or path.exists():
        return
    loose = legacy.stat().st_mode & 0o077
    if loose:
        raise KeyFileError(f"{legacy}: key file is readable by group/others (mode {oct(loose)}); "
                           f"run: chmod 600 {legacy}")
    os.replace(legacy, path)
    fsync_dir(path.parent)
    fsync_dir(legacy.parent)
    _log().info("secret_moved_to_secrets_folder", key=path.name)


def _check_name(name: str) -> None:
    if name not in NAMES:  # a programming error: the unit would not load its credential
        raise ValueError(f"{name!r} is not in edge.secrets.NAMES (and systemd/edge.service)")


def key(state_dir: str | os.PathLike, name: str, nbytes: int = 32, legacy: Path | None = None) -> bytes:
    """The key ``name``: from systemd credentials, else ``secrets/name`` (made 0600 on first use)."""
    _check_name(name)
    path = folder(state_dir) / name
    if (data := _credential(name, nbytes)) is not None:
        _remember_credential(path)
        return data
    try:
        if path.with_name(name + ".credential").exists():
            raise _missing_credential(path, name)
        _adopt(legacy, path)
        return secret_key(path, nbytes)
    except PermissionError:  # secrets/ is the daemon's alone (0700): name it and whose account to use
        from edge.access import refusal

        raise KeyFileError(refusal(path, os.R_OK, "the key") or f"{path}: permission denied; run this as "
                           "the user the edge service runs as (e.g. sudo -u edge ...)") from None


def read(state_dir: str | os.PathLike, name: str, legacy: Path | None = None) -> bytes:
    """An existing key, read only (CLI tools): never creates one."""
    _check_name(name)
    if (data := _credential(name)) is not None:
        return data
    path = folder(state_dir, create=False) / name
    if not path.exists() and path.with_name(name + ".credential").exists():
        raise _missing_credential(path, name, cli=True)
    if not path.exists() and legacy is not None and legacy.exists():
        path = legacy
    return path.read_bytes()
