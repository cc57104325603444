"""X-ray end to end: `edge run` in a subprocess, the scanner emulator, a real broker, kill -9."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from drivers.sim.xray import MALFORMED, LineServer, ScannerSim
from drivers.xray.contract import EVENT_PAYLOADS
from edge.signing import generate_keypair, load_private_key, sign
from edge.testing.wait import wait_for
from tests._xray_helpers import daemon_events

SITE, DEVICE = "site-1", "dev-1"
FOLDER = {"name": "xr-folder", "kind": "xray.folder", "poll_s": 0.1, "settle_s": 0.1}


def _conforms(events: list[dict]) -> None:
    """Every x-ray event matches the payload schema published in docs/asyncapi.json."""
    assert events
    for event in events:
        EVENT_PAYLOADS[event["type"]].model_validate(event["payload"])


def test_every_adapter_delivers_scans_to_an_mqtt_subscriber(tmp_path, mosquitto, mqtt_collector,
                                                              edge_daemon, base_config):
    inbox, server, sim = tmp_path / "inbox", LineServer(), ScannerSim(dose_usv=60.0)
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        xray={"limit_usv": 250.0, "warning_usv": 100.0},
        drivers=[{**FOLDER, "path": str(inbox)},
                 {"name": "xr-line", "kind": "xray.stream", "url": server.url, "reconnect_min_s": 0.1,
                  "allow_unauthenticated": True}])
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    try:
        daemon = edge_daemon(base_config)
        recs = [sim.record("clear"), sim.record("suspicious"), sim.record("override"), sim.record("no_reason")]
        image = os.urandom(3000)
        sim.write_json(inbox, recs[0], image=image)
        for kind in MALFORMED:  # every kind of bad file, between good ones
            sim.write_malformed(inbox, kind)
        sim.write_xml(inbox, recs[1])
        dicos = sim.write_dicos(inbox, recs[2], pixels=os.urandom(512))
        server.wait_client()
        collector.wait_for(lambda c: c.events("xray.stream_state"), 20, "line stream connected")
        server.send(b"q" * (10 * 1024 * 1024) + b"\n" + sim.line_kv(recs[3]))
        scans = collector.wait_for(lambda c: len(c.events("xray.scan")) >= 4 and c.events("xray.scan"), 30,
                                   "four xray.scan events")
        by_format = {e["payload"]["format"]: e["payload"] for e in scans}
        assert set(by_format) == {"json", "xml", "dicos", "line"}
        assert by_format["json"]["image"]["bytes"] == 3000 and by_format["dicos"]["image"]["bytes"] == 512
        assert image[:64].hex() not in json.dumps(scans)  # hash and size only, never the image
        assert by_format["xml"]["regions"][0]["label"] == "dense_object"
        assert by_format["line"]["reason"] is None
        collector.wait_for(lambda c: c.events("xray.rejected") and c.events("xray.unlawful_scan")
                           and c.events("xray.dose_warning"), 20, "rejection, unlawful and dose alarms")
        assert all(e["priority"] == "alarm" for e in collector.events("xray.dose_warning"))
        collector.wait_for(lambda c: len(c.events("xray.rejected")) == len(MALFORMED) + 1, 20, "all rejections")
        listed = json.loads(daemon.cli("xray", "quarantine", "--json").stdout)
        assert len(listed) == len(MALFORMED) and any("billion-laughs" in q["reason"] for q in listed)
        assert any("over the 65536-byte limit" in e["payload"]["reason"] for e in collector.events("xray.rejected"))
        assert (inbox / "processed" / dicos.name).exists()
        _conforms(collector.events("xray."))
        assert daemon.running
    finally:
        server.close()


def test_kill_9_between_emit_and_move_still_emits_each_file_once(tmp_path, edge_daemon, base_config):
    inbox, sim = tmp_path / "inbox", ScannerSim(dose_usv=7.0)
    base_config.update(drivers=[{**FOLDER, "path": str(inbox)}])
    daemon = edge_daemon(base_config)
    wait_for(lambda: (inbox / "processed").is_dir(), what="folders created")
    # The driver re-makes a missing processed/ before each move: swap in the file atomically.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be: every move fails")
    for _ in range(100):
        try:
            (inbox / "processed").rmdir()
            os.link(blocker, inbox / "processed")
            break
        except (FileNotFoundError, FileExistsError):
            continue  # the driver made the folder again in between: try again
    assert (inbox / "processed").is_file()
    first = sim.record("clear")
    sim.write_json(inbox, first)
    wait_for(lambda: daemon_events(daemon, "xray.scan"), what="the scan stored")
    daemon.kill()  # emitted, not moved: the window exactly-once must survive
    assert (inbox / f"{first['scan_id']}.json").exists()

    (inbox / "processed").unlink()
    daemon.start()
    wait_for(lambda: (inbox / "processed" / f"{first['scan_id']}.json").exists(), what="the file moved")
    second = sim.record("suspicious")
    sim.write_json(inbox, second)
    wait_for(lambda: len(daemon_events(daemon, "xray.scan")) >= 2, what="the next scan")
    ids = [e["payload"]["scan_id"] for e in daemon_events(daemon, "xray.scan")]
    assert ids == [first["scan_id"], second["scan_id"]]
    ledger = json.loads(daemon.cli("xray", "ledger", "A1234BC", "--json").stdout)
    assert ledger["total_usv"] == 14.0 and len(ledger["scans"]) == 2


def test_dose_ledger_survives_restart_and_reconciles_central_records(tmp_path, mosquitto, mqtt_collector,
                                                                     edge_daemon, base_config):
    key_path, pub_path, _ = generate_keypair(tmp_path / "keys", "central")
    inbox, sim = tmp_path / "inbox", ScannerSim(dose_usv=40.0)
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(pub_path)], "clock_skew_s": 60},
        xray={"limit_usv": 100.0, "warning_usv": 70.0},
        drivers=[{**FOLDER, "path": str(inbox)}])
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    daemon = edge_daemon(base_config)
    for i in range(2):
        sim.write_json(inbox, sim.record("clear"))
        collector.wait_for(lambda c, n=i + 1: len(c.events("xray.scan")) == n, 20, f"scan {i + 1}")
    warning = collector.wait_for(lambda c: c.events("xray.dose_warning"), 20, "warning at the 2nd scan")
    assert warning[0]["payload"]["total_usv"] == 80.0 and collector.events("xray.dose_limit") == []
    assert daemon.cli("xray", "check", "A1234BC").returncode == 0

    daemon.stop()
    daemon.start()  # the ledger is on disk; nothing is counted twice on restart
    check = daemon.cli("xray", "check", "A1234BC", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["total_usv"] == 80.0

    doc = sign({"type": "xray.dose_records", "site": SITE, "issued_at": datetime.now(UTC).isoformat(),
                "subjects": [{"subject": "A1234BC", "origins": [
                    {"site": "site-2", "total_usv": 15.0, "as_of": datetime.now(UTC).isoformat()},
                    {"site": SITE, "total_usv": 80.0, "as_of": datetime.now(UTC).isoformat()}]}]},
               load_private_key(key_path))
    import paho.mqtt.publish as publish

    for _ in range(2):  # delivered twice: the second is stale, nothing doubles
        publish.single(f"edge/v1/{SITE}/xray/dose", json.dumps(doc), qos=1, hostname="127.0.0.1",
                       port=mosquitto.port)
    applied = collector.wait_for(lambda c: len(c.events("xray.dose_records_applied")) == 2
                                 and c.events("xray.dose_records_applied"), 20, "dose records applied")
    assert [a["payload"]["applied"] for a in applied] == [1, 0] and applied[0]["payload"]["own_site"] == 1
    check = daemon.cli("xray", "check", "A1234BC", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["total_usv"] == 95.0

    sim.write_json(inbox, sim.record("clear", dose_usv=5.0))  # 95 + 5 = 100: the limit, at this scan
    limit = collector.wait_for(lambda c: c.events("xray.dose_limit"), 20, "limit reached")
    assert limit[0]["payload"]["problem"] == "limit_reached" and limit[0]["payload"]["total_usv"] == 100.0
    refused = daemon.cli("xray", "check", "A1234BC")
    assert refused.returncode == 1 and "must not be scanned" in refused.stderr

    forged = {**doc, "issued_at": datetime.now(UTC).isoformat()}  # signature no longer matches
    publish.single(f"edge/v1/{SITE}/xray/dose", json.dumps(forged), qos=1, hostname="127.0.0.1",
                   port=mosquitto.port)
    rejected = collector.wait_for(lambda c: c.events("xray.dose_records_rejected"), 20, "forgery refused")
    assert rejected[0]["priority"] == "alarm" and "signature" in rejected[0]["payload"]["reason"]
    _conforms(collector.events("xray."))
