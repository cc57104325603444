"""Durable local event store (SQLite): append, outbox, audit chain."""

from edge.store._reader import OutboxRow, StoreReader
from edge.store.store import Store

__all__ = ["OutboxRow", "Store", "StoreReader"]
