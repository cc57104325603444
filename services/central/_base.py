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


# ``next_seq - seq``, not ``next_seq > seq + 1``: seq + 1 overflowed bigint on PostgreSQL for a
# seq of 2**63-1 (a valid seq a hostile device may send), and the query failed for every device.
GAPS_SQL = """
SELECT device, store, seq + 1 AS first_missing, next_seq - 1 AS last_missing
FROM (SELECT device, store, seq,
             LEAD(seq) OVER (PARTITION BY device, store ORDER BY seq) AS next_seq
      FROM events {where}) AS t
WHERE next_seq - seq > 1
ORDER BY device, store, first_missing
"""
# Per device, more missing events than this is not a gap a device could have produced (see
# ``by_device``): default of ``--gap-max-missing``.
GAP_MAX_MISSING = 1_000_000
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


def by_device(gaps: list[dict[str, Any]], max_missing: int = GAP_MAX_MISSING) -> dict[str, Any]:
    """Sum the gaps per device; a device missing more than ``max_missing`` events is implausible.

    A device's seqs are dense but for what it dropped from a full store, jumps of at most one
    seq reservation block (100 000) after a store recovery, and what is still in flight: a
    default-size store (256 MiB) holds under a million events. A larger figure is a seq jump
    a device did not produce by working (a hostile or broken device sending seq 2**63-1), so
    it is reported by name and kept out of the estate-wide total, where it would hide every
    other device's real gaps. The bound is per device, not per gap: many gaps just under it
    add up to it. ``{"devices": {device: {"gaps", "missing", "implausible"}}, "gaps",
    "missing", "implausible": [device, ...]}``; the totals count plausible devices only.
    """
    devices: dict[str, dict[str, Any]] = {}
    for g in gaps:
        d = devices.setdefault(g["device"], {"gaps": 0, "missing": 0, "implausible": False})
        d["gaps"] += 1
        d["missing"] += g["missing"]
    implausible = []
    for name, d in devices.items():
        if d["missing"] > max_missing:
            d["implausible"] = True
            implausible.append(name)
    plausible = [d for d in devices.values() if not d["implausible"]]
    return {"devices": devices, "gaps": sum(d["gaps"] for d in plausible),
            "missing": sum(d["missing"] for d in plausible), "implausible": implausible,
            "max_missing": max_missing}


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
