"""The turnstile driver against the simulator over a real pty, for both codecs."""

from __future__ import annotations

import pytest

from drivers.turnstile import messages as m
from edge.errors import CommandError
from tests._turnstile_helpers import Lane

CODECS = ["rs485-bus", "bcc-p2p"]


@pytest.fixture(params=CODECS)
def lane(request, tmp_path):
    lane = Lane(request.param, tmp_path).start()
    lane.online()
    yield lane
    lane.stop()


def test_every_device_event_maps_to_the_vocabulary(lane):
    sim = lane.sim
    sim.passage("in")
    sim.passage("out", count=2)
    for kind, direction, arg in [("forced", "in", 0), ("tailgate", "in", 0), ("wrong_way", "out", 0),
                                 ("held_open", None, 0), ("tamper", None, 1), ("emergency", None, 1),
                                 ("fault", None, 7), ("emergency", None, 0)]:
        sim.alarm(kind, direction, arg)
    passages = lane.wait("turnstile.passage", count=3)
    assert [(p["payload"]["direction"], p["payload"]["counter"]) for p in passages] == [
        ("in", 1), ("out", 1), ("out", 2)]
    expected = {"forced": "alarm", "tailgate": "alarm", "wrong_way": "alarm", "held_open": "normal",
                "tamper": "alarm", "fault": "normal"}
    for name, priority in expected.items():
        (event,) = lane.wait(f"turnstile.{name}")
        assert event["priority"] == priority
    assert lane.wait("turnstile.tamper")[0]["payload"]["active"] is True
    assert lane.wait("turnstile.fault")[0]["payload"]["code"] == 7
    on, off = lane.wait("turnstile.emergency", count=2)
    assert (on["payload"]["active"], off["payload"]["active"]) == (True, False)
    assert on["priority"] == "alarm"
    seqs = [e["payload"]["device_seq"] for e in lane.events if "device_seq" in e["payload"]]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 11  # in order, no duplicates


def test_grant_timeout_is_reported(lane):
    lane.driver.handle("grant", {"direction": "out", "timeout_s": 1})
    (event,) = lane.wait("turnstile.grant_timeout")
    assert event["payload"]["direction"] == "out"


def test_every_command_is_acked_and_reaches_the_device(lane):
    sim, drv = lane.sim, lane.driver
    device = sim.devices[1]
    result = drv.handle("grant", {"direction": "in", "passes": 2, "timeout_s": 30})
    assert result["ok"] and result["rtt_ms"] > 0
    assert device.grant.direction == "in" and device.grant.passes_left == 2
    (granted,) = lane.wait("turnstile.granted")
    assert granted["payload"] == {"address": 1, "direction": "in", "passes": 2, "timeout_s": 30}
    drv.handle("deny", {})
    assert device.grant is None
    drv.handle("unlock", {})
    assert device.mode == m.Mode.FREE
    drv.handle("lock", {})
    assert device.mode == m.Mode.LOCKED
    drv.handle("lockdown", {})
    assert device.mode == m.Mode.LOCKDOWN
    drv.handle("release", {})
    assert device.mode == m.Mode.LOCKED
    drv.handle("set_time", {"epoch": 1_800_000_000})
    assert sim.received(m.SetTime)[-1] == m.SetTime(1_800_000_000)
    sim.passage("in", count=3)
    lane.wait("turnstile.passage", count=3)
    assert drv.handle("read_counters", {})["counters"] == {"in": 3, "out": 0}
    assert drv.handle("ping", {})["status"]["mode"] == "locked"
    assert lane.driver.stats["commands_ok"] == 9


def test_nak_fails_the_command_and_says_so(lane):
    lane.sim.nak_next(1)
    with pytest.raises(CommandError, match="refused by the controller"):
        lane.driver.handle("unlock", {})
    assert lane.sim.devices[1].mode == m.Mode.LOCKED
    assert lane.driver.stats["commands_failed"] == 1
    lane.driver.handle("lockdown", {})
    # rs485-bus NAKs carry a reason; a bcc-p2p NAK is one bare byte
    reason = "lockdown_active" if lane.driver.codec.polled else "no reason given"
    with pytest.raises(CommandError, match=f"NAK: {reason}"):
        lane.driver.handle("grant", {"direction": "in"})
    assert not lane.of("turnstile.granted")


def test_lock_is_refused_while_the_fire_alarm_swing_is_active(lane):
    lane.sim.alarm("emergency", arg=1)
    lane.wait("turnstile.emergency", active=True)
    before = len(lane.sim.received(m.Lock))
    for name in ("lock", "lockdown"):
        with pytest.raises(CommandError, match="fire-alarm free swing"):
            lane.driver.handle(name, {})
    assert len(lane.sim.received(m.Lock)) == before  # never sent
    lane.sim.alarm("emergency", arg=0)
    lane.wait("turnstile.emergency", active=False)
    lane.driver.handle("lock", {})


def test_a_lost_command_is_retried(lane):
    lane.sim.drop_next(1)
    result = lane.driver.handle("unlock", {})
    assert result["ok"] and lane.driver.stats["retries"] >= 1
    assert len(lane.sim.received(m.Unlock)) == 2


def test_silent_device_fails_the_command_goes_offline_and_comes_back(lane):
    lane.sim.mute(True)
    with pytest.raises(CommandError, match="NOT confirmed"):
        lane.driver.handle("grant", {"direction": "in"})
    assert not lane.of("turnstile.granted")
    (offline,) = lane.wait("turnstile.offline")
    assert "no reply" in offline["payload"]["reason"]
    assert lane.driver.health()["status"] == "degraded"
    lane.sim.mute(False)
    lane.online(count=2)
    assert lane.driver.handle("grant", {"direction": "in"})["ok"]


def test_slow_replies_within_the_timeout_are_fine_beyond_it_are_not(lane):
    lane.sim.slow_s = 0.05
    assert lane.driver.handle("unlock", {})["rtt_ms"] >= 50
    lane.sim.slow_s = 0.5
    with pytest.raises(CommandError, match="NOT confirmed"):
        lane.driver.handle("unlock", {})
    # lock reads the mode first (it must not end a lockdown): too slow, it is not even sent.
    with pytest.raises(CommandError, match="lock NOT (sent|confirmed)"):
        lane.driver.handle("lock", {})
    lane.sim.slow_s = 0


def test_noise_on_the_line_is_counted_and_frames_after_it_still_arrive(lane):
    for _ in range(20):
        lane.sim.noise(16)
        lane.sim.passage("in")
    lane.wait("turnstile.passage", count=20)
    line = lane.driver.health()["line"]
    assert line["garbage_bytes"] + line["malformed"] + line["bad_checksum"] > 0
    assert lane.driver.handle("read_counters", {})["counters"]["in"] == 20


def test_unplug_mid_stream_reports_offline_online_and_the_counter_gap(lane):
    sim = lane.sim
    sim.passage("in", count=2)
    lane.wait("turnstile.passage", count=2)
    sim.unplug()
    lane.wait("turnstile.offline")
    with pytest.raises(CommandError, match="not sent: the serial port"):
        lane.driver.handle("grant", {"direction": "in"})
    assert lane.driver.health()["status"] == "down"
    sim.passage("out", count=4)
    sim.devices[1].queue.clear()   # these four events are lost: only the counters know
    sim.passage("in", count=3)      # these are queued and heard after the replug
    sim.replug()
    lane.online(count=2)
    (gap,) = lane.wait("turnstile.counter_gap")
    assert gap["payload"] == {"address": 1, "direction": "out", "delta": 4, "last_counter": 0,
                              "counter": 4, "reason": "missed_while_offline"}
    assert [p["payload"]["counter"] for p in lane.wait("turnstile.passage", count=5)][2:] == [3, 4, 5]
    assert lane.driver.health()["reconnects"] >= 1
    assert lane.driver.handle("grant", {"direction": "in"})["ok"]


def test_device_queue_overflow_is_a_counter_gap(tmp_path):
    lane = Lane("rs485-bus", tmp_path, sim_opts={"queue_max": 2}).start()
    try:
        lane.online()
        lane.sim.unplug()
        lane.wait("turnstile.offline")
        lane.sim.passage("in", count=5)   # the device keeps the last 2 events only
        lane.sim.replug()
        (gap,) = lane.wait("turnstile.counter_gap")
        assert gap["payload"]["delta"] == 3 and gap["payload"]["reason"] == "device_queue_overflow"
        assert [p["payload"]["counter"] for p in lane.wait("turnstile.passage", count=2)] == [4, 5]
    finally:
        lane.stop()


def test_bus_with_two_controllers_one_silent(tmp_path):
    lane = Lane("rs485-bus", tmp_path, addresses=(3, 7)).start()
    try:
        lane.online(3)
        lane.online(7)
        lane.sim.passage("in", address=7)
        (p,) = lane.wait("turnstile.passage")
        assert p["payload"]["address"] == 7
        lane.driver.handle("grant", {"direction": "out", "address": 3})
        assert lane.sim.devices[3].grant is not None and lane.sim.devices[7].grant is None
        with pytest.raises(CommandError, match="no controller at address 5"):
            lane.driver.handle("grant", {"address": 5})
    finally:
        lane.stop()


def test_port_missing_at_start_is_reported_then_found(tmp_path):
    lane = Lane("bcc-p2p", tmp_path)
    lane.sim.unplug()
    lane.start()
    try:
        (offline,) = lane.wait("turnstile.offline")
        assert "port unavailable" in offline["payload"]["reason"]
        lane.sim.replug()
        lane.online()
    finally:
        lane.stop()


def test_bad_arguments_are_named(lane):
    with pytest.raises(CommandError, match="direction"):
        lane.driver.handle("grant", {"direction": "sideways"})
    with pytest.raises(CommandError, match="supported: grant"):
        lane.driver.handle("explode", {})


@pytest.mark.parametrize("codec", CODECS)
def test_unplug_replug_mid_stream_accounts_for_every_passage(codec, tmp_path):
    """Passages keep coming while the cable is pulled twice: every one is an event or in a gap."""
    lane = Lane(codec, tmp_path, sim_opts={"queue_max": 4}).start()
    try:
        lane.online()
        total = 0
        for round_ in range(2):
            for _ in range(6):
                lane.sim.passage("in")
                total += 1
            lane.sim.unplug()
            lane.wait("turnstile.offline", count=round_ + 1)
            for _ in range(10):          # more than the device's queue holds
                lane.sim.passage("in")
                total += 1
            lane.sim.replug()
            lane.wait("turnstile.online", count=round_ + 2)
        lane.sim.passage("in")
        total += 1
        lane.wait("turnstile.passage", counter=total)
        heard = [p["payload"]["counter"] for p in lane.of("turnstile.passage")]
        missed = sum(g["payload"]["delta"] for g in lane.of("turnstile.counter_gap"))
        assert len(heard) == len(set(heard)) and heard == sorted(heard)
        assert len(heard) + missed == total and missed >= 2 * (10 - 4)
    finally:
        lane.stop()


@pytest.mark.parametrize("codec", CODECS)
def test_granted_is_recorded_before_the_passage_it_allows(codec, tmp_path):
    lane = Lane(codec, tmp_path, sim_opts={"auto_pass": True, "auto_pass_delay_s": 0}).start()
    try:
        lane.online()
        for i in range(5):
            lane.driver.handle("grant", {"direction": "in"})
            lane.wait("turnstile.passage", count=i + 1)
        order = [e["type"] for e in lane.events if e["type"] in ("turnstile.granted", "turnstile.passage")]
        assert order == ["turnstile.granted", "turnstile.passage"] * 5
    finally:
        lane.stop()


def test_bus_adapter_that_echoes_our_own_frames(tmp_path):
    """2-wire RS-485 adapters often hear their own transmission: our echoed requests are ignored."""
    lane = Lane("rs485-bus", tmp_path, sim_opts={"echo": True}).start()
    try:
        lane.online()
        lane.sim.passage("out")
        assert lane.wait("turnstile.passage")[0]["payload"]["counter"] == 1
        assert lane.driver.handle("grant", {"direction": "in"})["ok"]
        assert lane.driver.handle("read_counters", {})["counters"] == {"in": 0, "out": 1}
        assert lane.driver.stats["retries"] == 0
    finally:
        lane.stop()


def test_a_stray_ack_on_the_line_never_confirms_a_later_command(tmp_path):
    """bcc's ACK is one bare byte: one that arrived before the command was sent is not its answer."""
    lane = Lane("bcc-p2p", tmp_path, retries=0).start()
    try:
        lane.online()
        lane.sim.mute(True)               # the controller will not answer the command...
        lane.sim._send(b"\x06\x06")       # ...but a late ACK of something earlier is on the line
        with pytest.raises(CommandError, match="NOT confirmed"):
            lane.driver.handle("unlock", {})
        assert lane.driver.stats["late_replies"] >= 1
    finally:
        lane.stop()


def test_a_nak_to_a_data_request_is_retried_then_reported(lane):
    lane.sim.nak_next(1)
    assert lane.driver.handle("read_counters", {})["counters"] == {"in": 0, "out": 0}
    lane.sim.nak_next(5)
    with pytest.raises(CommandError, match="refused by the controller"):
        lane.driver.handle("read_counters", {})
    assert lane.driver.health()["devices"]["1"]["online"] is True


def test_stray_nak_bytes_during_heartbeats_do_not_stop_the_driver(tmp_path):
    lane = Lane("bcc-p2p", tmp_path, status_interval_s=0.02).start()
    try:
        lane.online()
        for _ in range(100):
            lane.sim._send(b"\x15")   # a NAK-valued noise byte, whenever it lands
        lane.sim.passage("in")
        lane.wait("turnstile.passage")
        assert lane.driver.handle("ping", {})["ok"]
    finally:
        lane.stop()
