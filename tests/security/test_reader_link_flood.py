"""Red team: someone works a reader's cable, so it drops offline and comes back again and again.

Each time the reader was lost was a ``reader.offline`` alarm and a ``secure_channel_failed``
alarm, and an alarm is never evicted: the driver contacts a lost reader afresh within seconds
(``offline_retry_s``, the port's reconnect), so a cable or adapter being worked on (or a loose
contact) stored two alarms every few seconds, all day. The link's changes are now folded like a
tamper switch's: the first are reported one by one (CHANGE_BURST), the rest counted in one
``reader.flood`` (what: link_changes), and the state the flapping leaves is reported when the
flood reports next: a reader left offline is an alarm.

Against the real daemon, the reader played by libosdp's PD over the secure channel; its
adapter is pulled and put back (the pty goes and comes back at the same path).
Positive controls: a single pull is an offline alarm at once; the reader left offline is
alarmed; back on, the lane decides cards as ever.
"""

from __future__ import annotations

import time

import pytest

from edge.ratelimit import CHANGE_BURST
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import Perimeter, card_decision, card_of

WINDOW_S = 2.0
CYCLES = 6  # pulled and put back: 4 changes each (offline, channel down, up, online)


@pytest.fixture
def site(tmp_path, base_config, edge_daemon):
    p = Perimeter(tmp_path, base_config)
    for d in p.config["drivers"]:
        if d["kind"] == "reader.osdp":
            d.update(flood_report_s=WINDOW_S, offline_retry_s=0.3)
    daemon = edge_daemon(p.config)
    wait_event(daemon.state_dir, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
    yield p, daemon
    p.stop()


def _reader_in(e) -> bool:
    return e["source"] == "reader-in"


_LINK = ("reader.online", "reader.offline", "reader.secure_channel_failed")


def _links(state, after):
    return [e for e in events(state, "reader.*", after) if _reader_in(e) and e["type"] in _LINK]


def test_a_flapping_reader_link_is_bounded_alarms_and_a_reader_left_offline_is_alarmed(site):
    p, daemon = site
    state = daemon.state_dir
    reader = p.readers["in"]
    mark = last_seq(state)

    # Positive control: one pull is an offline alarm at once, and the reader comes back.
    reader.unplug()
    first = wait_event(state, "reader.offline", _reader_in, after=mark, timeout=10, what="offline")
    assert first["priority"] == "alarm", first
    reader.replug()
    wait_event(state, "reader.online", _reader_in, after=first["seq"], timeout=10, what="back online")

    # The attack: the adapter pulled and put back, again and again, left pulled.
    for _ in range(CYCLES):
        reader.unplug()
        time.sleep(0.5)
        reader.replug()
        time.sleep(1.0)
    reader.unplug()
    ended = wait_event(state, "reader.flood", lambda e: _reader_in(e) and e["payload"]["what"] == "link_changes"
                       and e["payload"]["state"] == "ended", after=mark, timeout=60, what="the flapping's end")
    time.sleep(0.5)  # the catch-up event is stored right after the end report

    links = _links(state, mark)
    offline = [e for e in links if e["type"] == "reader.offline"]
    floods = [e for e in events(state, "reader.flood", mark) if _reader_in(e)]
    assert all(f["payload"]["what"] == "link_changes" for f in floods), floods
    assert floods[0]["payload"]["state"] == "started" and floods[0]["priority"] == "alarm", floods[0]
    assert [f["priority"] for f in floods[1:]] == ["normal"] * (len(floods) - 1)
    # The link really flapped (each change reported, or counted), and most of it was counted.
    changes = len([e for e in links if e["seq"] < ended["seq"]]) + ended["payload"]["total"]
    assert changes >= 4 * CYCLES, (changes, [e["type"] for e in links], ended["payload"])
    assert ended["payload"]["total"] >= 4 * CYCLES - CHANGE_BURST, ended["payload"]
    alarms = [e for e in links if e["priority"] == "alarm"]
    assert len(alarms) <= CHANGE_BURST + 2, [e["type"] for e in alarms]  # not two per pull
    assert all(e["priority"] == "alarm" for e in offline)
    # The state it left (offline) is the last link event, an alarm, raised by a flood report.
    assert offline[-1]["seq"] > floods[0]["seq"], offline[-1]
    assert [e["type"] for e in links if e["seq"] > offline[-1]["seq"]] in ([], ["reader.secure_channel_failed"])
    health = daemon.cli("status", "--json").stdout
    assert '"link_flapping": false' in health and '"link_changes_suppressed"' in health, health

    # Back on: reported (at once, or by the report of the flood it starts), and cards decided as ever.
    after = last_seq(state)
    reader.replug()
    wait_event(state, "reader.online", _reader_in, after=after, timeout=30, what="online again")
    assert card_decision(p, state, card_of("P-3"))["outcome"] == "grant"
