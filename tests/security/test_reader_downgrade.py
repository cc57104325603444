"""A reader that talks OSDP in clear, against a real daemon that holds the reader's key.

libosdp refuses such a reader under EnforceSecure, but in install mode (the install
visit, where a reader on its default key is handed its own) it lets a reader that
does not offer the secure channel poll in clear: a look-alike reader swapped in
during that visit, or a device on the cable, would feed cards and PINs unprotected.
The driver refuses everything a keyed reader says outside the secure channel.
"""

from __future__ import annotations

import json

from drivers.readers.cards import encode_h10301
from edge.testing.wait import wait_for
from tests._gate_helpers import events, last_seq, wait_event
from tests._osdp_plaintext import CMD_POLL, PlaintextReader
from tests._perimeter_helpers import Perimeter, card_of


def _reader_health(daemon, name: str) -> dict:
    out = daemon.cli("status", "--json")
    return json.loads(out.stdout)["daemon"]["drivers"][name]


def test_plaintext_reader_yields_no_card_even_in_install_mode(tmp_path, base_config, edge_daemon):
    p = Perimeter(tmp_path, base_config)
    try:
        p.readers["in"].stop()
        hostile = p.readers["in"] = PlaintextReader(tmp_path / "tty-reader-in", address=1).start()
        reader_in = next(d for d in p.config["drivers"] if d["name"] == "reader-in")
        reader_in["install_mode"] = True  # the install visit: the default key is accepted, clear text must not be
        daemon = edge_daemon(p.config)
        state = daemon.state_dir
        alarm = wait_event(state, "reader.secure_channel_failed", lambda e: e["source"] == "reader-in",
                           what="the clear-text reader refused")
        assert alarm["priority"] == "alarm" and "without the secure channel" in alarm["payload"]["detail"]
        wait_for(lambda: CMD_POLL in hostile.commands_seen, 10, "the controller polling the clear-text reader")
        hostile.card(encode_h10301(*card_of("P-1")), 26)
        hostile.keys(b"1234#")
        wait_for(lambda: _reader_health(daemon, "reader-in").get("plaintext_refused", 0) >= 2, 15,
                 "the clear-text card and keys refused by the driver")

        wait_event(state, "reader.online", lambda e: e["source"] == "reader-out", what="positive control")
        mark = last_seq(state)
        p.present("out", "P-2")  # a genuine reader, over the secure channel, still works
        assert wait_event(state, "gate.decision", after=mark, what="exit decision")["payload"]["outcome"] == "grant"
        online_out = [e for e in events(state, "reader.online") if e["source"] == "reader-out"]
        assert online_out[0]["payload"]["secure"] is True
        reader_in_events = {e["type"] for e in events(state) if e["source"] == "reader-in"}
        assert not reader_in_events & {"reader.card", "reader.pin_entered", "reader.online"}
    finally:
        p.stop()
