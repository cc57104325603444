"""The learning cache's part of the MQTT contract (published in docs/asyncapi.json)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, RootModel

from edge.schema import SHA256_HEX, SITE, TABLET
from services.learning._catalog import Catalog
from services.learning.statements import Statement


class ChunkRequestMessage(BaseModel):
    """A tablet asks for one chunk. MQTT 5 properties: ResponseTopic and CorrelationData are required."""

    model_config = ConfigDict(extra="forbid")
    item: str = Field(pattern=SHA256_HEX, description="sha256 of the whole item.")
    index: int = Field(ge=0, description="Chunk number; the byte offset is index * catalog chunk_size.")
    chunk: str = Field(pattern=SHA256_HEX, description="sha256 of the chunk, as in the catalog.")


class ChunkResponseMessage(RootModel[bytes]):
    """The chunk's raw bytes (not JSON), with the request's CorrelationData and a user property
    ``status`` = ok | not_found | bad_request (and ``error`` saying why when not ok)."""


class CatalogRejected(BaseModel):
    """learning.catalog_rejected (alarm): a catalog failed verification; the tablet kept the one it had
    (``kept_version``), or, after a revocation, the held catalog itself no longer verifies and was dropped
    (``kept_version`` null)."""

    model_config = ConfigDict(extra="forbid")
    reason: str
    kept_version: int | None


EVENT_PAYLOADS = {"learning.statement": Statement, "learning.catalog_rejected": CatalogRejected}


def channels():
    from edge.contract import Channel

    site = {"site": SITE}
    both = {**site, "device": TABLET}
    return [
        Channel("siteLearningCatalog", "edge/v1/{site}/learning/catalog", "receive", Catalog,
                "The signed course catalog (retained).",
                "Ed25519-signed like commands. A tablet accepts it only if signed by a trusted key, for "
                "its site, with one sha256 per chunk per item, and with a version above the one it holds; "
                "it then replaces its catalog atomically and works from it offline. Items are pinned when "
                "assigned to the device or to a resident on it. A refused catalog becomes a "
                "learning.catalog_rejected alarm event.", retain=True, parameters=site),
        Channel("tabletChunkRequest", "edge/v1/{site}/learning/req/{device}", "send", ChunkRequestMessage,
                "A tablet asks the content server for one chunk (MQTT 5 request/response).",
                "The device id in the topic lets the broker ACL pin each tablet to its own requests. "
                "One request in flight per item being downloaded; a tablet retries after its chunk "
                "timeout, so answers must be idempotent.", qos=1, parameters=both),
        Channel("tabletChunkResponse", "edge/v1/{site}/{device}/learning/res", "receive", ChunkResponseMessage,
                "The content server's answer: the chunk's bytes.",
                "Publish to the request's ResponseTopic with its CorrelationData. The tablet verifies "
                "the sha256 before writing; a corrupt chunk is requested again, never stored.",
                parameters=both),
    ]
