"""The roles file beside each trust anchor (``NAME.pub.json``): the roles there are, and writing one.

Kept apart from reading anchors (``_anchors``) so that making a key pair (edge.signing) needs
nothing else of trust.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

ROLES = ("command", "catalog", "gallery", "directory", "config", "update")
ROLES_SUFFIX = ".json"


def roles_path(key_path: str | os.PathLike) -> Path:
    return Path(f"{key_path}{ROLES_SUFFIX}")


def write_roles(key_path: str | os.PathLike, roles, *, expires: datetime | None = None,
                kid: str | None = None) -> Path:
    """Write the roles file of a public key (mode 0640)."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    doc: dict = {"roles": sorted(set(roles))}
    if kid:
        doc["key_id"] = kid
    if expires is not None:
        doc["expires"] = expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = roles_path(key_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    os.chmod(path, 0o640)
    return path
