"""Where the device's secret keys live: one private folder, never beside what they protect.

``state_dir/secrets/`` (mode 0700, files 0600, owned by the daemon's user) holds
every key: the audit chain's, the mailbox's, the gallery's, the login-guard salt
and the device's seal key. A copy of ``messaging/`` or ``biometrics/`` alone
then decrypts nothing, and the folder can be put on other storage, backed up
apart, or replaced by systemd credentials: when ``$CREDENTIALS_DIRECTORY`` (set by
``LoadCredential=`` / ``LoadCredentialEncrypted=``, TPM-bound where the device has
one) holds a file of the key's name, that is used instead and nothing is written.

Start-up refuses a secrets folder or key file that group or others can read,
and says the command that fixes it. Keys found at their old places (beside the
database) are moved into the folder once, on first start after the upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from edge._fs import KeyFileError, fsync_dir, secret_key

log = structlog.get_logger("edge.secrets")
FOLDER = "secrets"


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


def _credential(name: str, nbytes: int) -> bytes | None:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds or not (Path(creds) / name).is_file():
        return None
    data = (Path(creds) / name).read_bytes()
    if len(data) != nbytes:
        raise KeyFileError(f"systemd credential {name}: expected {nbytes} bytes, found {len(data)}")
    return data


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
    log.info("secret_moved_to_secrets_folder", key=path.name)


def key(state_dir: str | os.PathLike, name: str, nbytes: int = 32, legacy: Path | None = None) -> bytes:
    """The key ``name``: from systemd credentials, else ``secrets/name`` (made 0600 on first use)."""
    if (data := _credential(name, nbytes)) is not None:
        return data
    path = folder(state_dir) / name
    _adopt(legacy, path)
    return secret_key(path, nbytes)


def read(state_dir: str | os.PathLike, name: str, legacy: Path | None = None) -> bytes:
    """An existing key, read only (CLI tools): never creates one."""
    if (creds := os.environ.get("CREDENTIALS_DIRECTORY")) and (Path(creds) / name).is_file():
        return (Path(creds) / name).read_bytes()
    path = folder(state_dir, create=False) / name
    if not path.exists() and legacy is not None and legacy.exists():
        path = legacy
    return path.read_bytes()
