"""Why this account cannot reach a file, and what fixes it: the group it is not in, or a login that
predates being added to it. Standard library only (the CLI's fast path and tests run it bare)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path


def _name(table, key: int) -> str:
    try:
        return table(key)[0]
    except KeyError:
        return str(key)


def _blocker(path: Path, need: int) -> tuple[Path, int] | None:
    """The first folder on the way that this account may not search, else ``path`` if ``need`` fails."""
    for folder in reversed(path.absolute().parents):
        if not os.access(folder, os.X_OK):
            return folder, os.X_OK
    if not os.access(path, need):
        return path, need
    return None


def denied_hint(path: str | os.PathLike, need: int = os.R_OK) -> str | None:
    """One clause: which file or folder stops this account (owner, group, mode) and what to do;
    None when nothing does (or it cannot be told)."""
    found = _blocker(Path(path), need)
    if found is None:
        return None
    where, need = found
    try:
        st = where.stat()
    except OSError:
        return None
    user = _name(pwd.getpwuid, os.getuid())
    owner, group = _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid)
    head = f"{where} (owner {owner}, group {group}, mode {stat.S_IMODE(st.st_mode):04o})"
    group_bits = {os.R_OK: stat.S_IRGRP, os.W_OK: stat.S_IWGRP, os.X_OK: stat.S_IXGRP}
    if not all(st.st_mode & bit for flag, bit in group_bits.items() if need & flag):
        root = "" if st.st_uid == 0 else " or as root"
        return f"{head} lets only {owner} in: run this as {owner} (sudo -u {owner} ...){root}"
    if st.st_gid == os.getgid() or st.st_gid in os.getgroups():
        return None  # the group lets this session in: something else (ACL, read-only mount) refuses
    try:
        member = st.st_gid in os.getgrouplist(user, pwd.getpwuid(os.getuid()).pw_gid)
    except (KeyError, OSError):
        member = False
    if member:  # added to the group after this login started: the session does not have it yet
        return (f"{head}: {user} was added to group {group} after this login; log out and in again "
                f"(or run `newgrp {group}`)")
    return (f"{head}: {user} is not in group {group}; an administrator runs `usermod -aG {group} {user}`, "
            f"then {user} logs in again")


def refusal(path: str | os.PathLike, need: int, what: str) -> str | None:
    """Why this account may not use ``what`` at ``path`` ("cannot read|write|open WHAT PATH: " and
    denied_hint's clause); None when nothing stops it. A file not there (or not to be seen) is judged by its folder: searched,
    and written to when ``need`` writes (the file is made there)."""
    path = Path(path)
    target, mode = path, need
    while not os.path.lexists(target) and target.parent != target:  # lexists: False when refused too
        target, mode = target.parent, os.X_OK | (need & os.W_OK)
    hint = denied_hint(target, mode)
    if hint is None:
        return None
    verb = {os.R_OK: "read", os.W_OK: "write"}.get(need & (os.R_OK | os.W_OK), "open")
    return f"cannot {verb} {what} {path}: {hint}"
