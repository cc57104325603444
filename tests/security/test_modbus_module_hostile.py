"""Red team: the relay module of a Modbus lane answers wrongly, and a lockdown dies with the driver.

Attacks from the peripheral's side (a faulty or swapped module, or someone on
the module's network segment) against the real daemon and a real broker:

- a reply to "read inputs" carrying fewer inputs than asked raised IndexError
  in the driver's run thread: a driver fault, its restart back-off, and a
  release coil that was pulsing left as it was meanwhile. It is now an answer
  the module did not give: a ``turnstile.fault`` alarm, the lane out of
  service (coils switched off on reconnect), the driver running;
- a "write coil" echo confirming another coil or level was taken as done:
  a release relay the device believed off could be on. It is refused the same way;
- a relay module keeps no mode, and the lane's lockdown (one person) lived in
  the driver's memory: any driver or daemon restart ended it, and the lane
  took grants again without the two people ``release`` needs. It is now
  recorded under the state dir and restored (the sally port's too).

Positive controls: a module that answers correctly takes the lane back into
service and a two-person grant pulses the release coil; two people end the
lockdown.
"""

from __future__ import annotations

import struct

import pytest

from drivers.sim.modbus_io import ModbusIoSim
from tests.security._redteam import Keys, result_of

COIL_IN, COIL_OUT = 0, 1
PASS_IN, PASS_OUT = 0, 1


def _short_input_reply(frame: bytes) -> bytes:
    """A read-inputs reply (function 2) with a byte count of 0: no inputs at all."""
    if len(frame) < 8 or frame[7] != 2:
        return frame
    pdu = bytes([2, 0])
    return frame[:4] + struct.pack(">H", 1 + len(pdu)) + frame[6:7] + pdu


def _lying_coil_echo(frame: bytes) -> bytes:
    """A write-coil reply (function 5) that confirms the opposite level."""
    if len(frame) < 12 or frame[7] != 5:
        return frame
    return frame[:10] + (b"\x00\x00" if frame[10:12] == b"\xff\x00" else b"\xff\x00")


@pytest.fixture
def lane(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    module = ModbusIoSim().start()
    keys = Keys(tmp_path / "keys")
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": keys.trusted(), "clock_skew_s": 60},
        drivers=[{"name": "lane1-ts", "kind": "turnstile.modbus", "host": "127.0.0.1", "tcp_port": module.port,
                  "coils": {"release_in": COIL_IN, "release_out": COIL_OUT},
                  "inputs": {"passage_in": PASS_IN, "passage_out": PASS_OUT},
                  "poll_interval_s": 0.02, "reply_timeout_s": 0.3, "retries": 1, "pulse_s": 0.2,
                  "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3}])
    collector = mqtt_collector(mosquitto, "edge/#")
    daemon = edge_daemon(base_config)
    _wait_events(collector, "turnstile.online", 1)
    yield mosquitto, collector, keys, module, daemon
    module.reply_filter = None
    module.stop()


def _events(collector, type_: str, **match) -> list[dict]:
    return [e for e in collector.events(type_)
            if e["type"] == type_ and all(e["payload"].get(k) == v for k, v in match.items())]


def _wait_events(collector, type_: str, count: int, **match) -> list[dict]:
    return collector.wait_for(lambda c: len(found := _events(c, type_, **match)) >= count and found,
                              15, f"{count} {type_} {match}")


def _grant(broker, collector, keys) -> dict:
    return result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="grant",
                                                     args={"direction": "in"}))


def _two_person_grant_pulses(broker, collector, keys, module) -> None:
    pulses = len([1 for _t, coil, level in module.coil_log if coil == COIL_IN and level])
    got = _grant(broker, collector, keys)
    assert got["status"] == "ok", got
    assert len([1 for _t, coil, level in module.coil_log if coil == COIL_IN and level]) == pulses + 1


def test_a_module_that_answers_wrongly_takes_the_lane_out_of_service_and_crashes_nothing(lane):
    broker, collector, keys, module, daemon = lane
    _two_person_grant_pulses(broker, collector, keys, module)  # control: a module that answers right

    module.reply_filter = _short_input_reply
    fault = _wait_events(collector, "turnstile.fault", 1, code=1)[0]
    assert fault["priority"] == "alarm", fault
    got = _grant(broker, collector, keys)
    assert got["status"] == "failed" and "out of service" in got["detail"], got
    assert "0 inputs" in daemon.log_tail(20000), "the fault does not say what the module answered"

    module.reply_filter = None  # the module answers right again: the lane is back
    _wait_events(collector, "turnstile.fault", 1, code=0)
    _two_person_grant_pulses(broker, collector, keys, module)

    module.reply_filter = _lying_coil_echo
    got = _grant(broker, collector, keys)
    assert got["status"] == "failed" and "NOT confirmed" in got["detail"], got
    assert "confirmed coil 0 off" in got["detail"], got
    _wait_events(collector, "turnstile.fault", 2, code=1)

    module.reply_filter = None
    _wait_events(collector, "turnstile.fault", 2, code=0)
    _two_person_grant_pulses(broker, collector, keys, module)
    assert not _events(collector, "system.driver_fault"), "the module's replies crashed the driver"


def test_a_lane_lockdown_survives_a_restart_and_only_two_people_end_it(lane):
    broker, collector, keys, module, daemon = lane
    got = result_of(collector, broker, keys.command("ops", target="lane1-ts", name="lockdown"))
    assert got["status"] == "ok" and got["result"]["status"]["mode"] == "lockdown", got

    daemon.restart()
    _wait_events(collector, "turnstile.online", 2)
    got = _grant(broker, collector, keys)
    assert got["status"] == "failed" and "lockdown" in got["detail"], got
    got = result_of(collector, broker, keys.command("ops", target="lane1-ts", name="lock"))
    assert got["status"] == "ok" and got["result"]["status"]["mode"] == "lockdown", got
    got = result_of(collector, broker, keys.command("ops", target="lane1-ts", name="release"))
    assert got["status"] == "rejected" and got["reason"] == "under_signed", got

    # Positive control: two people end the lockdown, and it stays ended across a restart.
    got = result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="release"))
    assert got["status"] == "ok" and got["result"]["status"]["mode"] == "normal", got
    daemon.restart()
    _wait_events(collector, "turnstile.online", 3)
    _two_person_grant_pulses(broker, collector, keys, module)


def test_a_sally_port_lockdown_survives_a_restart_and_only_two_people_end_it(tmp_path, mosquitto, mqtt_collector,
                                                                               edge_daemon, base_config):
    doors = ModbusIoSim().start()
    doors.set_input(0, True)  # both doors read closed: the interlock may release one
    doors.set_input(1, True)
    keys = Keys(tmp_path / "keys")
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": keys.trusted(), "clock_skew_s": 60},
        drivers=[{"name": "sally", "kind": "sallyport.modbus", "host": "127.0.0.1", "tcp_port": doors.port,
                  "outer": {"release": 0, "closed": 0}, "inner": {"release": 1, "closed": 1},
                  "release_s": 1.0, "poll_interval_s": 0.02, "reconnect_initial_s": 0.05}])
    collector = mqtt_collector(mosquitto, "edge/#")
    try:
        daemon = edge_daemon(base_config)
        _wait_events(collector, "turnstile.online", 1)
        got = result_of(collector, mosquitto, keys.command("ops", target="sally", name="lockdown"))
        assert got["status"] == "ok" and got["result"]["status"]["lockdown"] is True, got

        daemon.restart()
        _wait_events(collector, "turnstile.online", 2)
        door = keys.command("ops", "security", target="sally", name="release_door", args={"door": "outer"})
        got = result_of(collector, mosquitto, door)
        assert got["status"] == "failed" and "lockdown" in got["detail"], got

        # Positive control: two people end it; then the door opens on a two-person order.
        got = result_of(collector, mosquitto, keys.command("ops", "security", target="sally", name="release"))
        assert got["status"] == "ok" and got["result"]["status"]["lockdown"] is False, got
        door = keys.command("ops", "security", target="sally", name="release_door", args={"door": "outer"})
        got = result_of(collector, mosquitto, door)
        assert got["status"] == "ok", got
        doors.wait_coil(0, True)
    finally:
        doors.stop()
