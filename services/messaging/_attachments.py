"""Attachment checks: the declared type must be allowed and match the file's magic bytes."""

from __future__ import annotations

import base64
import binascii

from edge.errors import EdgeError

MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


class AttachmentRefused(EdgeError):
    """An attachment is too large, of a type not allowed, or not what it claims to be."""


def sniff(data: bytes) -> str | None:
    for media_type, prefixes in MAGIC.items():
        if any(data.startswith(p) for p in prefixes):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_attachments(items, *, allowed: list[str], max_bytes: int, max_count: int) -> list[tuple[str, bytes]]:
    """[(media_type, bytes)] from the API's ``[{"media_type", "data" (base64)}]``, or AttachmentRefused."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise AttachmentRefused("attachments must be a list of {media_type, data (base64)}")
    if len(items) > max_count:
        raise AttachmentRefused(f"{len(items)} attachments; at most {max_count} per message")
    out = []
    for n, item in enumerate(items):
        where = f"attachments[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise AttachmentRefused(f"{where}: expected {{media_type, data (base64)}}")
        if len(item["data"]) > (max_bytes + 2) // 3 * 4 + 4:
            raise AttachmentRefused(f"{where}: larger than the {max_bytes}-byte limit")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, ValueError):
            raise AttachmentRefused(f"{where}.data: not base64") from None
        out.append((check_one(item.get("media_type"), data, allowed, max_bytes, where), data))
    return out


def check_one(declared, data: bytes, allowed: list[str], max_bytes: int, where: str = "attachment") -> str:
    if len(data) > max_bytes:
        raise AttachmentRefused(f"{where}: {len(data)} bytes; the limit is {max_bytes}")
    if declared not in allowed:
        raise AttachmentRefused(f"{where}: type {declared!r} is not allowed; allowed: {', '.join(allowed)}")
    actual = sniff(data)
    if actual != declared:
        raise AttachmentRefused(f"{where}: declared {declared} but the content is "
                                f"{actual or 'not a recognised image'}")
    return declared
