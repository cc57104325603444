"""``edge central ingest``: MQTT 5 shared subscription -> central database, acked after commit.

Threads: paho's network thread receives and only queues (never blocks); the
``central-writer`` thread takes up to ``batch_max`` queued messages (waiting at
most ``linger_s`` for more), writes them in ONE database transaction, and only
after the commit returned sends each message's PUBACK (paho ``manual_ack``).
A consumer killed at any point has acknowledged only committed messages; the
broker keeps the rest in the consumer's persistent session and delivers them
again when it comes back (duplicates are absorbed by the database's unique keys).

No message can stop the writer (docs/fleet.md, "Hostile devices"): parsing refuses
what a database could not hold, each message alone; and when the database still
refuses a batch for its content (``DbError.data``), the batch is split in halves
until the message responsible is found, which is kept as a reject with the
database's reason while the others are stored. Only a database that is down or
busy makes the writer wait and retry the same batch. The queue between paho and
the writer is bounded (``queue_max``), and a QoS 0 message (no device channel is
QoS 0; Receive Maximum does not limit them) is counted and dropped before it is
queued, so a device flooding at QoS 0 neither grows memory nor delays others.

Subscriptions: events and command results through ``$share/GROUP/…`` (K
processes share the load); ``state`` outside the group, because a shared
subscription receives no retained messages, and every process needs births.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.mqtt._client import parse_broker
from edge.mqtt.topics import ROOT
from services.central._parse import MAX_MESSAGE_BYTES, Parsed, parse_into
from services.central.db import CentralDb, DbError

log = structlog.get_logger("edge.central.ingest")

EVENTS_FILTER = f"{ROOT}/+/+/events/#"
RESULTS_FILTER = f"{ROOT}/+/+/cmd/result"
STATE_FILTER = f"{ROOT}/+/+/state"


@dataclass
class IngestConfig:
    broker: str
    group: str = "ingest"
    client_id: str = "edge-central-ingest-1"
    batch_max: int = 500            # messages per transaction at most
    linger_s: float = 0.05          # how long a small batch waits for more messages
    session_expiry_s: int = 7 * 24 * 3600
    receive_max: int = 2000         # unacknowledged messages the broker may send us
    keepalive_s: int = 30
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    shared: bool = True             # False: plain subscriptions, for ONE consumer (see docs/fleet.md)
    max_message_bytes: int = MAX_MESSAGE_BYTES  # a larger message is a reject (its first 64 KiB kept)
    queue_max: int = 10_000         # messages received and not yet written; paho waits when full

    def filters(self) -> list[tuple[str, int]]:
        share = f"$share/{self.group}/" if self.shared else ""
        return [(share + EVENTS_FILTER, 1), (share + RESULTS_FILTER, 1), (STATE_FILTER, 1)]


class Ingest:
    """One member of the ingest group. ``start()``, then ``stop()`` (or be killed: nothing is lost)."""

    def __init__(self, cfg: IngestConfig, db: CentralDb):
        self.cfg, self.db = cfg, db
        self.broker = parse_broker(cfg.broker)
        self.counters = {"messages": 0, "events_ingested": 0, "duplicates": 0, "rejected": 0,
                         "states": 0, "batches": 0, "db_errors": 0, "connects": 0,
                         "dropped_qos0": 0}
        self._qos0_logged: dict[str, float] = {}
        self.lag_s: float | None = None
        self.subscribed = threading.Event()
        self._q: queue.Queue = queue.Queue(maxsize=cfg.queue_max)
        self._gen = 0  # connection generation: a mid is only valid on the connection that gave it
        self._stopping = threading.Event()
        self._client = self._make_client()
        self._writer = threading.Thread(target=self._run, name="central-writer", daemon=True)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Ingest:
        applied = self.db.migrate()
        if applied:
            log.info("central_db_migrated", applied=applied, dialect=self.db.dialect)
        self._writer.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_max
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.cfg.keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Commit and acknowledge what was received, then disconnect (the session stays)."""
        self._stopping.set()
        self._writer.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def status(self) -> dict:
        return {**self.counters, "queued": self._q.qsize(), "lag_s": self.lag_s,
                "connected": self._client.is_connected(), "client_id": self.cfg.client_id,
                "group": self.cfg.group}

    # -- MQTT (paho's thread: never block) -------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        client.reconnect_delay_set(0.2, 2)  # one process, not a fleet: come back fast
        client.max_queued_messages_set(0)
        if self.broker.tls:
            client.tls_set(ca_certs=str(self.cfg.ca_file) if self.cfg.ca_file else None,
                           certfile=str(self.cfg.cert_file) if self.cfg.cert_file else None,
                           keyfile=str(self.cfg.key_file) if self.cfg.key_file else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("central_connect_refused", broker=self.cfg.broker, reason=str(reason_code))
            return
        self._gen += 1
        self.counters["connects"] += 1
        log.info("central_connected", broker=self.cfg.broker, client_id=self.cfg.client_id,
                 session_present=bool(flags.session_present))
        client.subscribe(self.cfg.filters())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("central_disconnected", broker=self.cfg.broker, reason=str(reason_code))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("central_subscribe_refused", reasons=failed, filters=[f for f, _ in self.cfg.filters()])
            return
        log.info("central_subscribed", filters=[f for f, _ in self.cfg.filters()])
        self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.qos == 0:  # every device channel is QoS 1 (docs/asyncapi.json): a QoS 0 flood costs no write
            self._dropped_qos0(msg.topic)
            return
        item = (self._gen, msg.mid, msg.qos, msg.topic, msg.payload)
        while not self._stopping.is_set():  # full: wait for the writer (TCP pushes back on the broker)
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        # Stopping: not acknowledged, so the broker delivers it again to the next session.

    def _dropped_qos0(self, topic: str) -> None:
        self.counters["dropped_qos0"] += 1
        now = time.monotonic()
        if now - self._qos0_logged.get(topic, -60.0) >= 60.0:  # once a minute per topic at most
            if len(self._qos0_logged) > 10_000:
                self._qos0_logged.clear()
            self._qos0_logged[topic] = now
            log.warning("central_qos0_dropped", topic=topic, dropped_total=self.counters["dropped_qos0"],
                        reason="the contract publishes every device channel at QoS 1; QoS 0 is not stored")

    # -- the writer ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                try:
                    self._commit(batch)
                except Exception:  # a last resort: the writer must outlive any one batch
                    log.exception("central_writer_fault", messages=len(batch))
                    # Not acknowledged: the broker delivers them again after a reconnect.
            elif self._stopping.is_set():
                return

    def _take(self) -> list[tuple]:
        try:
            batch = [self._q.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.cfg.linger_s
        while len(batch) < self.cfg.batch_max:
            try:
                batch.append(self._q.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._q.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[tuple]) -> None:
        parsed = self._parse(batch)
        pending = [(batch, parsed)]
        while pending:
            items, parsed = pending.pop()
            try:
                written = self._write(parsed, len(items))
            except DbError as exc:  # the content was refused: find the message responsible
                if len(items) == 1:
                    _gen, _mid, _qos, topic, payload = items[0]
                    log.error("central_message_refused_by_db", topic=topic, error=str(exc)[:300])
                    reason = f"the database refused it: {exc}".encode("ascii", "backslashreplace").decode()
                    parsed = Parsed(rejects=[(topic, reason[:500], bytes(payload))])
                    written = self._write(parsed, 1)
                else:
                    half = len(items) // 2
                    pending += [(items[half:], self._parse(items[half:])), (items[:half], self._parse(items[:half]))]
                    continue
            if written is None:
                return  # stopping: nothing of this acknowledged, the broker sends it again
            gen = self._gen
            for item_gen, mid, qos, _topic, _payload in items:
                if item_gen == gen and qos > 0:  # older connections' mids: the broker sends those again
                    self._client.ack(mid, qos)
            self._count(items, parsed, *written)

    def _parse(self, items: list[tuple]) -> Parsed:
        now = datetime.now(UTC)
        parsed = Parsed()
        for _gen, _mid, _qos, topic, payload in items:
            parse_into(parsed, topic, payload, now, self.cfg.max_message_bytes)
        return parsed

    def _write(self, parsed: Parsed, messages: int) -> tuple[int, int] | None:
        """Commit ``parsed``, waiting out a database that is down; None when stopping meanwhile.

        Raises DbError when the database refused the rows' content (retrying cannot help).
        """
        delay = 0.1
        while True:
            try:
                return self.db.write(parsed)
            except DbError as exc:
                if exc.data:
                    raise
                error = exc
            except Exception as exc:  # an unforeseen driver error: the content
                err = DbError(f"{type(exc).__name__}: {exc}")
                err.data = True
                raise err from exc
            # Nothing is acknowledged: the broker keeps the messages; we try again.
            self.counters["db_errors"] += 1
            log.error("central_db_write_failed", messages=messages, error=str(error)[:300], retry_in_s=delay)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, 10.0)

    def _count(self, batch, parsed: Parsed, inserted: int, duplicates: int) -> None:
        c = self.counters
        c["messages"] += len(batch)
        c["events_ingested"] += inserted
        c["duplicates"] += duplicates
        c["rejected"] += len(parsed.rejects)
        c["states"] += len(parsed.states)
        c["batches"] += 1
        if parsed.newest_ts is not None:
            self.lag_s = max(0.0, (datetime.now(UTC) - parsed.newest_ts).total_seconds())
        for topic, reason, _payload in parsed.rejects:
            log.warning("central_message_rejected", topic=topic, reason=reason)
