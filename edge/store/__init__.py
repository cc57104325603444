"""Durable local event store (SQLite): append, outbox, audit chain.

``StoreReader`` needs only sqlite3, so the CLI's read-only commands import it
without pulling in pydantic; ``Store`` (the writer) is resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.store._reader import OutboxRow, StoreReader

if TYPE_CHECKING:
    from edge.store.store import Store

__all__ = ["OutboxRow", "Store", "StoreReader"]


def __getattr__(name: str):
    if name == "Store":
        from edge.store.store import Store

        return Store
    raise AttributeError(f"module 'edge.store' has no attribute {name!r}")
