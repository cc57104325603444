"""Hostile JSON on signed-document topics: NaN, Infinity, lone surrogates, oversize bodies.

Before issue 19 a document with ``NaN`` or a lone ``\\ud800`` raised ValueError
while its canonical bytes were built, killing the thread that read it (the dose
ledger, the command router, the learning worker). Each attack here is refused
as a signature failure with a reason, and the next valid input is processed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import paho.mqtt.publish as publish
import pytest

from drivers.sim.xray import ScannerSim
from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.signing import (
    DocumentRejected,
    SignatureError,
    generate_keypair,
    load_private_key,
    load_public_keys,
    open_signed,
    sign,
    verify,
)

SITE, DEVICE = "site-1", "dev-1"
# Raw JSON text an attacker can publish: Python's json module reads all of these.
HOSTILE_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', '"a\\udfffb"']


@pytest.fixture
def central(tmp_path):
    key, pub, _ = generate_keypair(tmp_path / "keys", "central")
    return load_private_key(key), pub


def _with(doc: dict, field: str, raw_value: str) -> bytes:
    """``doc`` as JSON text with ``field`` replaced by the raw (hostile) JSON value."""
    marker = "__HOSTILE__"
    text = json.dumps({**doc, field: marker})
    return text.replace(f'"{marker}"', raw_value).encode()


@pytest.mark.parametrize("raw_value", HOSTILE_VALUES)
def test_non_finite_and_surrogates_are_a_signature_failure(central, raw_value):
    private, pub = central
    trusted = load_public_keys([pub])
    doc = sign({"type": "t", "n": 1}, private)
    hostile = json.loads(_with(doc, "n", raw_value))
    with pytest.raises(SignatureError, match="no canonical form"):
        verify(hostile, trusted)
    with pytest.raises(DocumentRejected) as info:
        open_signed(_with(doc, "n", raw_value), trusted, None, "catalog")
    assert info.value.problem == "signature"
    assert verify(doc, trusted)  # positive control: the same document, untouched, verifies


def test_oversize_document_is_refused_before_it_is_parsed(central):
    private, pub = central
    trusted = load_public_keys([pub])
    doc = sign({"type": "t", "pad": "x" * 2000}, private)
    raw = json.dumps(doc).encode()
    with pytest.raises(DocumentRejected) as info:
        open_signed(b"{" * 5000 + raw, trusted, None, "catalog", max_bytes=len(raw))  # never parsed
    assert info.value.problem == "too_large"
    assert open_signed(raw, trusted, None, "catalog", max_bytes=len(raw))["pad"] == "x" * 2000


def test_hostile_dose_records_leave_the_dose_ledger_running(tmp_path, mosquitto, mqtt_collector, edge_daemon,
                                                            base_config, central):
    """The finding: NaN on xray/dose killed the ledger, then 4 x 3 µSv passed a 10 µSv limit unseen."""
    private, pub = central
    inbox, sim = tmp_path / "inbox", ScannerSim(dose_usv=3.0)
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(pub)], "clock_skew_s": 60},
        xray={"limit_usv": 10.0, "warning_usv": 5.0},
        drivers=[{"name": "xr", "kind": "xray.folder", "path": str(inbox), "poll_s": 0.1, "settle_s": 0.1}])
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    daemon = edge_daemon(base_config)
    now = datetime.now(UTC).isoformat()
    doc = sign({"type": "xray.dose_records", "site": SITE, "issued_at": now, "subjects": [
        {"subject": "A1234BC", "origins": [{"site": "site-2", "total_usv": 0.5, "as_of": now}]}]}, private)
    for raw_value in HOSTILE_VALUES:
        publish.single(f"edge/v1/{SITE}/xray/dose", _with(doc, "issued_at", raw_value), qos=1,
                       hostname="127.0.0.1", port=mosquitto.port)
    rejected = collector.wait_for(lambda c: len(c.events("xray.dose_records_rejected")) == len(HOSTILE_VALUES)
                                  and c.events("xray.dose_records_rejected"), 30, "every hostile document refused")
    assert all("signature" in r["payload"]["reason"] for r in rejected)

    # Positive control: the ledger still counts. 4 x 3 µSv against 10 µSv: warning, then the limit.
    for _ in range(4):
        sim.write_json(inbox, sim.record("clear"))
    collector.wait_for(lambda c: c.events("xray.dose_limit"), 30, "the dose limit alarm")
    assert collector.events("xray.dose_warning")
    refused = daemon.cli("xray", "check", "A1234BC")
    assert refused.returncode == 1 and "must not be scanned" in refused.stderr
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["daemon"]["components"]["xray"]["status"] == "ok"


def test_hostile_commands_are_refused_and_the_router_keeps_running(tmp_path, mosquitto, mqtt_collector,
                                                                  edge_daemon, base_config, central):
    private, pub = central
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(pub)], "clock_skew_s": 60},
        drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 2.0}])
    collector = mqtt_collector(mosquitto, [f"edge/v1/{SITE}/{DEVICE}/cmd/result",
                                           f"edge/v1/{SITE}/{DEVICE}/events/system"])
    edge_daemon(base_config)
    topic = f"edge/v1/{SITE}/{DEVICE}/cmd"
    attacks = []
    for i, raw_value in enumerate(HOSTILE_VALUES):
        doc = build_command(keys=[private], target="hb", name="ping", device=DEVICE, site=SITE,
                            args={"v": 1}, command_id=f"hostile-{i}")
        attacks.append(_with(doc, "args", '{"v": ' + raw_value + '}'))
    attacks.append(_with(build_command(keys=[private], target="hb", name="ping", device=DEVICE, site=SITE),
                         "id", '"\\ud800"'))  # a hostile id must not stop its own rejection record
    for body in attacks:
        publish.single(topic, body, qos=1, hostname="127.0.0.1", port=mosquitto.port)

    def rejections(c):
        return [e["payload"] for e in c.events("system.command_rejected")]
    got = collector.wait_for(lambda c: len(rejections(c)) >= len(attacks) and rejections(c), 30,
                             "every hostile command refused")
    assert sum(r["reason"] == "bad_signature" for r in got) == len(HOSTILE_VALUES)
    assert any(r["id"] == "\\ud800" for r in got)

    valid = build_command(keys=[private], target="hb", name="ping", device=DEVICE, site=SITE)
    publish_command(mosquitto.uri, SITE, DEVICE, valid)  # positive control: the router still runs commands

    def result(c):
        return [e["payload"] for m in c.on_topic("/cmd/result") for e in m.json()["events"]
                if e["payload"]["id"] == valid["id"]]
    assert collector.wait_for(result, 30, "the valid command's result")[0]["status"] == "ok"
