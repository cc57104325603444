"""Test and benchmark helpers for the central ingest: a real ingest process and a raw publisher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from edge.testing.wait import wait_for


class IngestProcess:
    """``edge central ingest`` as a child process (so a test can kill -9 it)."""

    def __init__(self, workdir: Path, broker_uri: str, db_url: str, *args: str, instance: int = 1):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cmd = [sys.executable, "-m", "edge", "central", "ingest", "--broker", broker_uri, "--db", db_url,
                    "--instance", str(instance), "--log-level", "info", *args]
        self.log = self.workdir / f"ingest-{instance}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> IngestProcess:
        self.starts += 1
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def subscribed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ingest exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
            with open(self.log, "rb") as f:
                f.seek(offset)
                return b"central_subscribed" in f.read()

        try:
            wait_for(subscribed, timeout, "the ingest to subscribe")
        except AssertionError:
            self.kill()  # never leave a half-started consumer behind
            raise
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def event(device: str, site: str, seq: int, type_: str = "sim.heartbeat", **payload) -> dict:
    """A contract-valid event envelope (as the device's store would serialise it)."""
    return {"v": 1, "id": str(uuid.uuid4()), "device": device, "site": site, "seq": seq,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": type_, "source": "test", "priority": "normal", "clock": "synced", "payload": payload}


class Publisher:
    """A plain MQTT 5 client publishing contract batches with QoS 1, each waited for (PUBACK)."""

    def __init__(self, port: int, host: str = "127.0.0.1", client_id: str | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, port)
        self.client.loop_start()

    def batch(self, site: str, device: str, events: Iterable[dict], topic: str | None = None,
              **envelope) -> None:
        topic = topic or f"edge/v1/{site}/{device}/events/sim"
        self.send(topic, json.dumps({"events": list(events), **envelope}).encode())

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        if not info.is_published():
            raise AssertionError(f"no PUBACK for {topic} within 10 s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def db_url(kind: str, tmp_path, request) -> str:
    """A central database for a test parametrized over ``kind``: a SQLite file in ``tmp_path``, or
    an empty database on the session's PostgreSQL server (the ``postgres_url`` fixture)."""
    return str(tmp_path / "central.db") if kind == "sqlite" else request.getfixturevalue("postgres_url")
