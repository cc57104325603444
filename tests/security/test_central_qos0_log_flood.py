"""Red team: a compromised device floods the central ingest with QoS 0 messages on topics of its own
making, to flood central's log (the real `edge central ingest`, a real mosquitto, SQLite).

QoS 0 is counted and dropped on arrival, and the drop was logged once a minute *per topic*. The
device's ACL lets it publish on ``events/+`` with any last level, so a new topic per message was a
log line per message (2 000 lines for 2 000 messages here), and past 10 000 topics the table was
cleared, so every other device's lines came through again. Now it is once a minute per device.
"""

from __future__ import annotations

import time
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.testing.broker import free_port
from edge.testing.central import IngestProcess
from edge.testing.wait import wait_for

SITE, EVIL, GOOD = "site-1", "tab-evil", "gate-1"
FLOOD = 2000


def _client(port: int, cid: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _lines(log: str, device: str) -> int:
    return sum(1 for line in log.splitlines() if "central_qos0_dropped" in line and f"/{device}/" in line)


def test_qos0_on_a_topic_per_message_is_one_log_line_per_device(mosquitto, tmp_path):
    port = free_port()
    ingest = IngestProcess(tmp_path, mosquitto.uri, str(tmp_path / "central.db"),
                           "--metrics-listen", f"127.0.0.1:{port}").start()
    try:
        def dropped() -> int:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            return int(next(line.split()[1] for line in text.splitlines()
                            if line.startswith("edge_central_dropped_qos0_total ")))

        evil = _client(mosquitto.port, "evil-flood")
        for i in range(FLOOD):
            evil.publish(f"edge/v1/{SITE}/{EVIL}/events/x{i}", b'{"events": []}', qos=0)
        wait_for(lambda: dropped() >= FLOOD, 60, "every QoS 0 message counted as dropped")
        # Positive control: another device's QoS 0 is still logged (its own minute, not the attacker's).
        good = _client(mosquitto.port, "good-one")
        good.publish(f"edge/v1/{SITE}/{GOOD}/events/sim", b'{"events": []}', qos=0)
        wait_for(lambda: _lines(ingest.log.read_text(), GOOD) == 1, 30, "the other device's drop logged")
        time.sleep(0.5)
        log = ingest.log.read_text()
        assert _lines(log, EVIL) == 1, _lines(log, EVIL)  # was one per message
        for c in (evil, good):
            c.disconnect()
            c.loop_stop()
        assert ingest.stop() == 0
    finally:
        ingest.kill()
