"""Attacks on the perimeter, each against a real daemon with a real broker and libosdp readers.

Forged, retyped, replayed, unsigned and tampered-on-disk credential directories are
refused (and alarmed); a reader without our secure-channel key never yields a card;
positive controls show the legitimate path still works.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from drivers.sim.osdp_pd import OsdpReaderSim
from edge.signing import generate_keypair, load_private_key, sign
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import (
    SITE,
    Perimeter,
    card_decision,
    publish_directory,
    signed_directory,
)

NEW_CARD = (7, 5555)
NEW_HOLDER = {"id": "P-NEW", "kind": "staff", "credentials": ["7:5555"]}


@pytest.fixture
def site(tmp_path, base_config, edge_daemon, mosquitto):
    p = Perimeter(tmp_path, base_config)
    p.config["mqtt"] = {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5}
    daemon = edge_daemon(p.config)
    wait_event(daemon.state_dir, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
    yield p, daemon, mosquitto
    p.stop()


def test_forged_retyped_replayed_unsigned_directories_are_refused(site, tmp_path):
    p, daemon, broker = site
    state = daemon.state_dir
    holders = [*p.holders, NEW_HOLDER]
    mallory = load_private_key(generate_keypair(tmp_path / "mallory", "mallory")[0])
    catalogs = load_private_key(p.catalog_key)  # trusted by the device, but for catalogs only
    later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    retyped = {"type": "xray.dose_records", "site": SITE, "issued_at": later, "holders": holders}
    attacks = {
        "signature": signed_directory(mallory, holders, later),  # someone else's key
        "wrong_role": signed_directory(catalogs, holders, later),  # a trusted key without the role
        "wrong_type": sign(retyped, p.central_key),  # validly signed by central, but not a directory
        "not_newer": signed_directory(p.central_key, holders, "2020-01-01T00:00:00+00:00"),  # a replay
        # Validly signed but dated far ahead: taken, it would make every real directory "not newer".
        "not_yet_valid": signed_directory(p.central_key, holders, "9999-01-01T00:00:00+00:00"),
    }
    unsigned = {"type": "gate.directory", "site": SITE, "issued_at": later, "holders": holders}
    for problem, doc in [*attacks.items(), ("signature", unsigned)]:
        mark = last_seq(state)
        publish_directory(broker, doc)
        rejected = wait_event(state, "gate.directory_rejected", after=mark, what=f"the {problem} refusal")
        assert rejected["priority"] == "alarm", rejected
        if problem == "wrong_role":  # the signature is refused: its key may not sign directories
            assert rejected["payload"]["problem"] == "signature", rejected
            assert "not trusted" in rejected["payload"]["detail"], rejected
        else:
            assert rejected["payload"]["problem"] == problem, rejected
        d = card_decision(p, state, NEW_CARD)
        assert (d["outcome"], d["reason"]) == ("deny", "unknown_credential"), problem

    mark = last_seq(state)  # positive control: central's newer directory is taken at once
    publish_directory(broker, signed_directory(p.central_key, holders, later))
    applied = wait_event(state, "gate.directory_applied", after=mark, what="the directory applied")
    assert applied["payload"]["holders"] == len(holders)
    assert card_decision(p, state, NEW_CARD)["outcome"] == "grant"


def test_directory_changed_on_disk_is_not_trusted(site):
    p, daemon, broker = site
    state = daemon.state_dir
    assert card_decision(p, state, (7, 1001))["outcome"] == "grant"  # positive control: P-1
    daemon.stop()
    path = state / "gate-directory.json"
    doc = json.loads(path.read_text())
    doc["holders"].append(NEW_HOLDER)  # someone with a shell adds their own card
    path.write_text(json.dumps(doc))
    daemon.start(timeout=60)
    wait_event(state, "gate.directory_rejected", lambda e: e["payload"]["problem"] == "kept_file",
               what="the tampered file refused")
    wait_event(state, "reader.online", lambda e: e["source"] == "reader-in", after=last_seq(state) - 50,
               what="reader-in online again")
    d = card_decision(p, state, NEW_CARD)
    assert (d["outcome"], d["reason"]) == ("deny", "unknown_credential")  # fail closed


def test_reader_without_our_key_never_yields_a_card(tmp_path, base_config, edge_daemon):
    p = Perimeter(tmp_path, base_config)
    try:
        p.readers["in"].stop()  # a look-alike reader swapped in: it does not hold this reader's key
        p.readers["in"] = OsdpReaderSim(tmp_path / "tty-reader-in", address=1, key=bytes(16)).start()
        daemon = edge_daemon(p.config)
        state = daemon.state_dir
        alarm = wait_event(state, "reader.secure_channel_failed", what="the secure channel refused")
        assert alarm["priority"] == "alarm" and alarm["source"] == "reader-in"
        p.present("in", "P-1")
        wait_event(state, "reader.online", lambda e: e["source"] == "reader-out", what="positive control")
        mark = last_seq(state)
        p.present("out", "P-2")  # the genuine reader on the other lane works
        assert wait_event(state, "gate.decision", after=mark, what="exit decision")["payload"]["outcome"] == "grant"
        assert not [e for e in events(state, "reader.card") if e["source"] == "reader-in"]
        assert not [e for e in events(state, "reader.online") if e["source"] == "reader-in"]
    finally:
        p.stop()
