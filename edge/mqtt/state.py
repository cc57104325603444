"""Device state, in the spirit of Sparkplug B birth/death certificates.

A retained ``edge/v1/{site}/{device}/state`` message says whether the device
is online. Birth (``online: true``) goes out on every connect and again when
driver health changes (at most every ``_MIN_INTERVAL_S``); the broker's last
will and a graceful shutdown both say ``online: false``. ``boot_seq`` counts
starts of the daemon (persisted in state_dir), so a consumer can tell which
death belongs to which birth even when messages arrive out of order.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from edge import __version__
from edge._fs import atomic_write
from edge.config import Settings
from edge.errors import StoreError
from edge.mqtt import topics
from edge.mqtt.errors import MqttUnavailable
from edge.supervisor import SupervisedThread

log = structlog.get_logger("edge.mqtt.state")

BOOT_SEQ_FILE = "boot_seq"
_MIN_INTERVAL_S = 2.0  # health flaps must not flood central with retained births


def next_boot_seq(state_dir: Path) -> int:
    """Read, increment and durably store the start counter; returns the new value."""
    path = Path(state_dir) / BOOT_SEQ_FILE
    try:
        current = int(path.read_text().strip() or 0)
    except FileNotFoundError:
        current = 0
    except ValueError:
        # A torn or edited file must not stop the daemon; restart above any plausible value.
        current = int(time.time())
        log.warning("boot_seq_file_unreadable", path=str(path), resumed_at=current + 1)
    value = current + 1
    atomic_write(path, f"{value}\n".encode())
    return value


def _iso(dt: datetime | None = None) -> str:
    # "Z", as in events: one spelling of UTC on every topic.
    return (dt or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seal_key(state_dir: Path) -> str:
    from edge.sealing import device_key

    return device_key(state_dir).public_b64


class DeviceState:
    """Publishes birth, re-birth and death of this device on its retained state topic."""

    def __init__(self, link, settings: Settings, store=None, health: Callable[[], dict] | None = None):
        self.link, self.settings, self.store = link, settings, store
        self.health = health or dict
        self.topic = topics.state(settings.site, settings.device_id)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.boot_seq = next_boot_seq(settings.state_dir)
        # Made (or read) now, at start: a disk that fills later must not stop the birth message.
        self.seal_key = _seal_key(settings.state_dir)
        self.started_at = _iso()
        self.published = 0
        self._due = threading.Event()  # a birth must be (re)published
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_at = 0.0
        emit = getattr(link.uplink, "fault_emit", None) if getattr(link, "uplink", None) else None
        self._thread = SupervisedThread(self._run, name="mqtt-state", emit=emit)
        link.set_will(self.topic, self.death(reason="connection_lost"))
        link.add_connection_listener(self._on_connection)

    # -- payloads ------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        s = self.settings
        return {"device": s.device_id, "site": s.site, "role": s.role, "version": __version__,
                "boot_seq": self.boot_seq, "started_at": self.started_at,
                "store_id": getattr(self.store, "store_id", None)}

    def birth(self) -> bytes:
        doc = {"online": True, **self._identity(), "ts": _iso(), "drivers": self.health(),
               "outbox": self._outbox(), "seal_key": self.seal_key}
        return json.dumps(doc, separators=(",", ":"), default=str).encode()

    def death(self, reason: str) -> bytes:
        doc = {"online": False, **self._identity(), "reason": reason}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _outbox(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        try:
            stats = self.store.stats()
        except (StoreError, sqlite3.Error) as exc:  # a birth still goes out with a broken store
            return {"error": str(exc)}
        return {"pending": stats["pending"], "oldest_pending_age_s": stats["oldest_pending_age_s"]}

    # -- triggers (any thread, never block) ----------------------------------------

    def _on_connection(self, connected: bool) -> None:
        if connected:
            self._last_at = 0.0  # a birth on connect is never rate-limited
            self._due.set()
            self._wake.set()

    def notify_health_changed(self) -> None:
        self._due.set()
        self._wake.set()

    def rebirth(self) -> None:
        self._last_at = 0.0
        self._due.set()
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Publish ``offline`` ourselves and wait (bounded) for its PUBACK; True if acked."""
        self._stopping.set()
        self._thread.stop()
        self._wake.set()
        self._thread.join(timeout)
        try:
            delivery = self.link.publish(self.topic, self.death(reason="shutdown"), qos=1, retain=True)
        except MqttUnavailable:
            return False  # not connected: the retained will or the last death already says offline
        acked = delivery.wait(timeout)
        log.info("state_offline_published", boot_seq=self.boot_seq, acked=acked)
        return acked

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            if not self._due.is_set() or not self.link.connected:
                continue
            wait = self._last_at + _MIN_INTERVAL_S - time.monotonic()
            if wait > 0:
                if self._stopping.wait(wait):
                    return
            self._due.clear()
            self._publish_birth()

    def _publish_birth(self) -> None:
        self._last_at = time.monotonic()
        try:
            self.link.publish(self.topic, self.birth(), qos=1, retain=True)
        except MqttUnavailable:
            self._due.set()  # goes out on the next connect
            return
        self.published += 1
        log.info("state_birth_published", boot_seq=self.boot_seq)
