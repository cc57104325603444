"""The content transfer protocol, shared by the tablet and the content server.

MQTT 5 request/response on the device's one broker connection:

- catalog (retained, signed): ``edge/v1/{site}/learning/catalog``
- request: ``edge/v1/{site}/learning/req/{device}``, JSON
  ``{"item": sha256, "index": n, "chunk": sha256-of-chunk}``, with the MQTT 5
  ``ResponseTopic`` and ``CorrelationData`` properties set. The device name in
  the topic lets the broker's ACL pin a device to its own requests.
- response: on the requested ``ResponseTopic`` (the tablet uses
  ``edge/v1/{site}/{device}/learning/res``), same ``CorrelationData``; the
  payload is the raw chunk bytes, and a user property ``status`` is ``ok`` or an
  error code (``not_found``, ``bad_request``) with ``error`` saying why.

Chunks are content-addressed: the catalog lists the sha256 of every chunk of
every item (fixed ``chunk_size`` per catalog), so a tablet verifies each chunk
on arrival and the whole item at the end.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from edge.errors import EdgeError
from edge.mqtt import topics


class ProtocolError(EdgeError):
    """A chunk request or response does not follow the content transfer protocol."""


def catalog_topic(site: str) -> str:
    return f"{topics.site_prefix(site)}/learning/catalog"


def request_topic(site: str, device: str) -> str:
    return f"{topics.site_prefix(site)}/learning/req/{device}"


def request_filter(site: str) -> str:
    return f"{topics.site_prefix(site)}/learning/req/+"


def response_topic(site: str, device: str) -> str:
    return f"{topics.device_prefix(site, device)}/learning/res"


@dataclass(frozen=True)
class ChunkRequest:
    item: str
    index: int
    chunk: str

    def encode(self) -> bytes:
        return json.dumps({"item": self.item, "index": self.index, "chunk": self.chunk}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ChunkRequest:
        try:
            doc = json.loads(raw)
            req = cls(str(doc["item"]), int(doc["index"]), str(doc["chunk"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"bad chunk request: {exc!r}; expected "
                                '{"item": sha256, "index": n, "chunk": sha256}') from None
        if req.index < 0:
            raise ProtocolError("bad chunk request: index must be >= 0")
        return req


def chunk_hashes(data_or_file, chunk_size: int) -> tuple[str, list[str], int]:
    """(sha256 of the whole, sha256 of each chunk, size) of a binary file object."""
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    while True:
        block = data_or_file.read(chunk_size)
        if not block:
            break
        whole.update(block)
        chunks.append(hashlib.sha256(block).hexdigest())
        size += len(block)
    if not chunks:
        chunks.append(hashlib.sha256(b"").hexdigest())
    return whole.hexdigest(), chunks, size
