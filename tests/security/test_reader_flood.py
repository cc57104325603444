"""Red team: a keyed reader (or someone on its cable) replays card reads as fast as it is polled.

Against a real gate daemon, the reader played by libosdp's own PD over the secure channel:
every unknown card used to become a gate decision and an ``unknown_credential`` alarm that the
store never evicts and the uplink must carry. The reader's limit refuses reads over it before
they are credentials; the flood is one ``reader.flood`` alarm plus counts, the stored alarms stay
bounded, and a genuine card within the limit (first in the flood, then at a person's pace after
it) is still decided and granted.
"""

from __future__ import annotations

import json
import time

import pytest

from tests._flood_helpers import WINDOW_S, serial_flood_site
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import Perimeter, card_decision, card_of

RATE, BURST = 1.0, 3
FLOOD = 60  # reads presented; libosdp delivers ~16/s at this poll rate


@pytest.fixture
def site(tmp_path, base_config, edge_daemon):
    with serial_flood_site(tmp_path, base_config, edge_daemon, "reader.online", "reader-in",
                           {"reader.osdp": {"rate": RATE, "burst": BURST, "flood_report_s": WINDOW_S}}) as perimeter:
        yield perimeter


def _from_reader_in(state, glob, after):
    return [e for e in events(state, glob, after) if e["source"] == "reader-in"]


def test_a_card_read_flood_is_one_alarm_and_a_genuine_card_still_passes(site):
    p, daemon = site
    state = daemon.state_dir
    mark = last_seq(state)
    started = time.monotonic()
    p.present("in", "P-2")  # a genuine card first: within the burst, so decided as ever
    for i in range(FLOOD - 1):
        p.present("in", card=(7, 9000 + i))  # unknown cards, back to back
    ended = wait_event(state, "reader.flood", lambda e: e["payload"]["state"] == "ended", after=mark,
                       timeout=60, what="the flood's end and its total")
    elapsed = time.monotonic() - started

    floods = _from_reader_in(state, "reader.flood", mark)
    assert [f["payload"]["state"] for f in floods][0] == "started" and floods[-1] == ended
    assert [f["priority"] for f in floods] == ["alarm"] + ["normal"] * (len(floods) - 1), floods
    cards = _from_reader_in(state, "reader.card", mark)
    total = ended["payload"]["total"]
    assert len(cards) + total == FLOOD, (len(cards), total)  # every read is a card or counted as refused
    assert sum(f["payload"]["suppressed"] for f in floods) == total
    assert total >= FLOOD - BURST - RATE * elapsed - 1, (total, elapsed)

    # What the store keeps for good: one flood alarm, and a decision only for the reads let through.
    alarms = [e for e in events(state, "*", mark) if e["priority"] == "alarm"]
    unknown = [a for a in alarms if a["type"] == "gate.decision" and a["payload"]["reason"] == "unknown_credential"]
    assert len(unknown) <= BURST + RATE * elapsed, (len(unknown), elapsed)
    assert len(alarms) == len(unknown) + 1, [a["type"] for a in alarms]  # + reader.flood 'started'

    decisions = [e["payload"] for e in events(state, "gate.decision", mark)]
    genuine = [d for d in decisions if d.get("subject") == "P-2"]
    assert [d["outcome"] for d in genuine] == ["grant"], decisions[:3]
    assert [d["outcome"] for d in decisions if d.get("subject") != "P-2"] == ["deny"] * (len(decisions) - 1)

    # Positive control: after the flood, a card at a person's pace is read and granted.
    assert card_decision(p, state, card_of("P-3"))["outcome"] == "grant"
    status = daemon.cli("status", "--json")
    assert '"flooding": false' in status.stdout and f'"cards_refused": {total}' in status.stdout, status.stdout


@pytest.fixture
def slow_window_site(tmp_path, base_config, edge_daemon):
    """The flood stays 'in progress' for a minute after its last refused read: time to look."""
    p = Perimeter(tmp_path, base_config)
    for d in p.config["drivers"]:
        if d["kind"] == "reader.osdp":
            d.update(rate=RATE, burst=BURST, flood_report_s=60)
    daemon = edge_daemon(p.config)
    wait_event(daemon.state_dir, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
    yield p, daemon
    p.stop()


def test_an_engineer_sees_which_reader_floods_from_status_and_doctor(slow_window_site):
    """`edge status` showed the flooding reader as just 'degraded' and `edge doctor` said every
    component was running. Positive control: the other reader is ok and not named."""
    p, daemon = slow_window_site
    mark = last_seq(daemon.state_dir)
    for i in range(20):
        p.present("in", card=(7, 9000 + i))
    wait_event(daemon.state_dir, "reader.flood", lambda e: e["payload"]["state"] == "started", after=mark,
               what="the flood's alarm")
    status = daemon.cli("status")
    lines = status.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("driver  reader-in "))
    assert "degraded" in lines[at] and lines[at + 1].strip().startswith("reader-in: FLOODING:"), status.stdout
    assert f"{BURST} at once, then {RATE:g} a second" in lines[at + 1] and "reader.flood" in lines[at + 1]
    assert "FLOODING" not in status.stdout.split("driver  reader-out ")[1].split("\n")[0]
    doctor = daemon.cli("doctor", "--only", "components", "--json")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    failed = [c for c in json.loads(doctor.stdout)["checks"] if not c["ok"]]
    assert [c["target"] for c in failed] == ["reader-in"], failed
    assert "FLOODING" in failed[0]["detail"]
