"""What both central stores share: the interface (``CentralDb``), its error, the retry of a
transient conflict. ``db`` adds SQLite and picks the dialect; ``_pg`` adds PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from services.central._parse import EVENT_COLUMNS, Parsed

log = structlog.get_logger("edge.central.db")


GAPS_SQL = """
SELECT device, store, seq + 1 AS first_missing, next_seq - 1 AS last_missing
FROM (SELECT device, store, seq,
             LEAD(seq) OVER (PARTITION BY device, store ORDER BY seq) AS next_seq
      FROM events {where}) AS t
WHERE next_seq > seq + 1
ORDER BY device, store, first_missing
"""
DEVICE_COLUMNS = ("device", "site", "role", "version", "store", "online", "boot_seq", "started_at",
                  "state_at", "offline_reason", "last_seen")


class DbError(RuntimeError):
    """The central database refused or failed a write or a query.

    ``transient``: a conflict between writers, worth retrying at once. ``data``: the rows'
    content was refused (a value the column cannot hold), so retrying the same rows can
    never succeed; the ingest then finds the message responsible and keeps it as a reject.
    """

    transient = False
    data = False


# Python-side errors a driver raises while converting a row's values (an integer past 64
# bits, a string that cannot be UTF-8 encoded, a value of a type it cannot adapt).
DATA_ERRORS = (OverflowError, ValueError, TypeError)


def iso(value: Any) -> Any:
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


class CentralDb:
    """What the ingest and the tools need from a database (both dialects)."""

    dialect = "?"

    def migrate(self) -> list[str]:
        raise NotImplementedError

    def write(self, parsed: Parsed) -> tuple[int, int]:
        """Store a batch atomically; (events inserted, duplicates ignored)."""
        raise NotImplementedError

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- reads shared by both dialects -------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        rows = self.query(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices ORDER BY site, device")
        out = []
        for row in rows:
            d = dict(zip(DEVICE_COLUMNS, (iso(v) for v in row), strict=True))
            d["online"] = None if d["online"] is None else bool(d["online"])
            out.append(d)
        return out

    def gaps(self, device: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE device = %s", (device,)) if device else ("", ())
        rows = self.query(GAPS_SQL.format(where=where), params)
        return [{"device": r[0], "store": r[1], "first_missing": r[2], "last_missing": r[3],
                 "missing": r[3] - r[2] + 1} for r in rows]

    def events(self, device: str | None, since: datetime | None, limit: int) -> list[dict[str, Any]]:
        cond, params = [], []
        if device:
            cond.append("device = %s")
            params.append(device)
        if since:
            cond.append("ts >= %s")
            params.append(self._ts(since))
        where = f"WHERE {' AND '.join(cond)}" if cond else ""
        rows = self.query(f"SELECT id, device, site, store, seq, type, priority, ts, received_at, body "
                          f"FROM events {where} ORDER BY ts, device, seq LIMIT %s", (*params, limit))
        return [dict(zip(EVENT_COLUMNS, (iso(v) for v in r), strict=True)) for r in rows]

    # -- commands waiting for a second signature ---------------------------------

    def propose(self, doc: dict[str, Any]) -> None:
        """Keep a signed command for its second signer; the same id with other content is refused."""
        body, now = json.dumps(doc, sort_keys=True), self._ts(datetime.now(UTC))
        known = self.query("SELECT doc FROM proposals WHERE id = %s", (doc["id"],))
        if known and json.loads(known[0][0]) != doc:
            raise DbError(f"a different command with id {doc['id']} is already proposed")
        if not known:
            self.query("INSERT INTO proposals (id, doc, signatures, proposed_at, updated_at) "
                       "VALUES (%s, %s, %s, %s, %s) RETURNING id", (doc["id"], body, len(doc["signatures"]), now, now))

    def cosigned(self, doc: dict[str, Any]) -> None:
        """Store the command with its added signature (same id, same content underneath)."""
        self.query("UPDATE proposals SET doc = %s, signatures = %s, updated_at = %s WHERE id = %s RETURNING id",
                   (json.dumps(doc, sort_keys=True), len(doc["signatures"]), self._ts(datetime.now(UTC)), doc["id"]))

    def proposals(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT doc, signatures, proposed_at, updated_at FROM proposals ORDER BY proposed_at")
        return [{**json.loads(doc), "_signatures": n, "_proposed_at": iso(p), "_updated_at": iso(u)}
                for doc, n, p, u in rows]

    def proposal(self, command_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT doc FROM proposals WHERE id = %s", (command_id,))
        return json.loads(rows[0][0]) if rows else None

    def _ts(self, value: datetime) -> Any:
        return value


def retrying(fn, what: str, attempts: int = 5):
    """Run ``fn`` again after a transient conflict (deadlock between ingest processes)."""
    for attempt in range(attempts):
        try:
            return fn()
        except DbError as exc:
            if not getattr(exc, "transient", False) or attempt == attempts - 1:
                raise
            log.warning("central_db_retry", what=what, attempt=attempt + 1, error=str(exc)[:200])
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
