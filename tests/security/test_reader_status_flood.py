"""Red team: a keyed reader (or a flapping tamper switch) toggles its tamper state as fast as it is polled.

The card-read limit (test_reader_flood.py) bounds card reads only. Each tamper or power change
was an alarm of its own, and an alarm is never evicted from the store: libosdp's PD, holding the
reader's key, sent 80 tamper on/off reports and the gate stored 80 ``reader.tamper`` alarms in
under a second (a day of it: over a million alarms, a full store). Now the first changes are
alarmed one by one (CHANGE_BURST), the rest are counted in one ``reader.flood`` (what:
status_changes), and the state the flood leaves is alarmed when the flood is over; a real tamper
is therefore never hidden, only the flapping is folded.
"""

from __future__ import annotations

import time

import pytest

from edge.ratelimit import CHANGE_BURST
from tests._flood_helpers import WINDOW_S, serial_flood_site
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import card_decision, card_of

TOGGLES = 81  # on, off, on, ... ends on: the reader is left tampered


@pytest.fixture
def site(tmp_path, base_config, edge_daemon):
    with serial_flood_site(tmp_path, base_config, edge_daemon, "reader.online", "reader-in",
                           {"reader.osdp": {"flood_report_s": WINDOW_S}}) as perimeter:
        yield perimeter


def _from_reader_in(state, glob, after):
    return [e for e in events(state, glob, after) if e["source"] == "reader-in"]


def test_a_tamper_flap_is_bounded_alarms_and_the_state_it_leaves_is_alarmed(site):
    p, daemon = site
    state = daemon.state_dir
    reader = p.readers["in"]
    mark = last_seq(state)

    # Positive control: a single change is an alarm at once.
    reader.local_status(tamper=True)
    first = wait_event(state, "reader.tamper", lambda e: e["source"] == "reader-in", after=mark, what="tamper")
    assert first["priority"] == "alarm" and first["payload"]["active"] is True
    reader.local_status(tamper=False)
    wait_event(state, "reader.tamper", lambda e: e["source"] == "reader-in" and not e["payload"]["active"],
               after=first["seq"], what="tamper cleared")

    # The attack: toggles at the polling rate, left tampered.
    for i in range(TOGGLES):
        reader.local_status(tamper=i % 2 == 0)
    ended = wait_event(state, "reader.flood", lambda e: e["source"] == "reader-in"
                       and e["payload"]["state"] == "ended", after=mark, timeout=60, what="the flap's end")
    time.sleep(0.5)  # the catch-up alarm is stored right after the end report

    tampers = _from_reader_in(state, "reader.tamper", mark)
    floods = _from_reader_in(state, "reader.flood", mark)
    assert all(f["payload"]["what"] == "status_changes" for f in floods), floods
    assert floods[0]["payload"]["state"] == "started" and floods[0]["priority"] == "alarm"
    assert [f["priority"] for f in floods[1:]] == ["normal"] * (len(floods) - 1)
    # 2 + TOGGLES changes in all: each one an alarm, or counted in the flood (a report may add an
    # alarm of the state left so far, hence >=); all but the burst (and a refill) were counted.
    assert len([t for t in tampers if t["seq"] < ended["seq"]]) + ended["payload"]["total"] >= 2 + TOGGLES
    assert ended["payload"]["total"] >= 2 + TOGGLES - CHANGE_BURST - 1, ended["payload"]
    assert len(tampers) <= CHANGE_BURST + 2, [t["payload"] for t in tampers]  # bucket + catch-ups, not 83
    assert all(t["priority"] == "alarm" for t in tampers)
    # The state the flap left (tampered) is the last alarm, raised by a flood report (the burst's
    # last change alarmed was 'cleared'): nothing real is hidden.
    assert tampers[-1]["payload"]["active"] is True and tampers[-1]["seq"] > floods[0]["seq"], tampers[-1]
    health = daemon.cli("status", "--json").stdout
    assert '"tamper": true' in health and '"status_flapping": false' in health, health

    # The lane still works: a genuine card is decided as ever.
    assert card_decision(p, state, card_of("P-3"))["outcome"] == "grant"
