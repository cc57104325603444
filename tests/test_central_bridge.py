"""A site broker bridged to central with the shipped config: the WAN link is cut under load,
restored, and every event reaches the central ingest's database exactly once."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from edge.contract import CHANNELS
from edge.testing.central import Publisher, event
from edge.testing.certs import issue
from edge.testing.netcut import NetCut
from edge.testing.wait import wait_for
from services.central.db import open_db

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "mosquitto-site-bridge.conf"
SITE = "hmp-example"


def _bridge_topics() -> list[tuple[str, str]]:
    return re.findall(r"^topic (\S+) (in|out) 1$", SHIPPED.read_text(), flags=re.M)


def test_shipped_bridge_forwards_every_contract_channel():
    """Every channel of the contract crosses the bridge in its direction (send = out)."""
    import paho.mqtt.client as mqtt

    topics = _bridge_topics()
    for ch in CHANNELS:
        concrete = (ch.address.replace("{site}", SITE).replace("{device}", "dev-1")
                    .replace("{family}", "turnstile"))
        direction = "out" if ch.action == "send" else "in"
        assert any(d == direction and mqtt.topic_matches_sub(p, concrete) for p, d in topics), \
            f"{ch.id} ({ch.address}, {direction}) has no bridge topic line in {SHIPPED.name}"


def _bridge_section(central_port: int, ca: str, cert: dict) -> str:
    """The shipped bridge part, pointed at this test's central broker and certificates."""
    text = SHIPPED.read_text()
    bridge = text[text.index("connection "):]
    swaps = {r"^address .*$": f"address 127.0.0.1:{central_port}",
             r"^bridge_cafile .*$": f"bridge_cafile {ca}",
             r"^bridge_certfile .*$": f"bridge_certfile {cert['cert']}",
             r"^bridge_keyfile .*$": f"bridge_keyfile {cert['key']}",
             r"^restart_timeout .*$": "restart_timeout 1 2"}  # the test's only change: retry sooner
    for pattern, line in swaps.items():
        bridge, n = re.subn(pattern, line, bridge, flags=re.M)
        assert n == 1, pattern
    return bridge


def test_bridge_outage_under_load_every_event_once(mosquitto_factory, tls_material, tmp_path, ingest_factory):
    ca_cert, ca_key = tls_material["ca_obj"]
    central = mosquitto_factory(tls={"ca": tls_material["ca"], **tls_material["server"]})
    wan = NetCut(central.port).start()
    bridge_cert = issue(tmp_path, ca_cert, ca_key, "bridge-hmp-example")
    site = mosquitto_factory(extra=_bridge_section(wan.port, tls_material["ca"], bridge_cert))
    ingest_cert = issue(tmp_path, ca_cert, ca_key, "central-ingest")
    url = str(tmp_path / "central.db")
    ingest = ingest_factory(tmp_path, central.uri, url, "--ca-file", tls_material["ca"],
                           "--cert-file", ingest_cert["cert"], "--key-file", ingest_cert["key"]).start()
    db = open_db(url)
    count = lambda: db.query("SELECT COUNT(*) FROM events")[0][0]  # noqa: E731
    devices = ["gate-1", "gate-2", "tab-1"]
    seq = dict.fromkeys(devices, 0)
    stop = threading.Event()
    pub = Publisher(site.port)

    def load() -> None:
        while not stop.is_set():
            for d in devices:
                pub.batch(SITE, d, [event(d, SITE, seq[d] + k + 1) for k in range(10)])
                seq[d] += 10
            stop.wait(0.02)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: count() > 0, 30, "events through the bridge")
        wan.cut()
        at_cut = sum(seq.values())
        wait_for(lambda: sum(seq.values()) > at_cut + 300, 30, "load published during the outage")
        stranded = sum(seq.values()) - count()
        wan.restore()
        wait_for(lambda: sum(seq.values()) > at_cut + 600, 30, "load after the restore")
    finally:
        stop.set()
        loader.join()
    total = sum(seq.values())
    assert stranded > 0, "the outage must have held events back at the site"
    wait_for(lambda: count() >= total, 60, f"all {total} events at central")
    for d in devices:
        got = [r[0] for r in db.query("SELECT seq FROM events WHERE device = %s ORDER BY seq", (d,))]
        assert got == list(range(1, seq[d] + 1)), f"{d}: missing or duplicated events"
    assert wan.accepted >= 2, "the bridge must have reconnected through the restored link"
    ingest.stop()
    pub.close()
    wan.cut()
