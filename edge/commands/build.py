"""Making signed commands: what ``edge cmd sign`` does, and what tests and central tools reuse."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.commands.model import iso
from edge.signing import sign


def build_command(*, target: str, name: str, args: dict[str, Any] | None = None, ttl_s: float = 300,
                  device: str | None = None, site: str | None = None, reason: str | None = None,
                  keys: Iterable = (), now: datetime | None = None, command_id: str | None = None,
                  issued_at: datetime | None = None) -> dict[str, Any]:
    """A command document signed by each private key in ``keys``, in order."""
    now = now or datetime.now(UTC)
    issued = issued_at or now
    doc: dict[str, Any] = {
        "v": 1, "id": command_id or str(uuid.uuid4()), "name": name, "target": target,
        "args": args or {}, "issued_at": iso(issued), "expires_at": iso(now + timedelta(seconds=ttl_s)),
    }
    if device:
        doc["device"] = device
    if site:
        doc["site"] = site
    if reason:
        doc["reason"] = reason
    for key in keys:
        doc = sign(doc, key)
    return doc
