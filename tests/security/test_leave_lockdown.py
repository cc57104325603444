"""Red team: leave a lockdown with one stolen command key, through a closing command.

Lockdown is one signature (closing stays quick); leaving it is ``release`` or
``gate mode normal``, two people. But the turnstile's ``lock`` means "normal
controlled mode" on the wire, so a ``lock`` sent to a controller in lockdown
leaves the lockdown just as ``release`` does, and ``gate mode out_of_service``
sends ``lock`` to every lane. Both are ``operate`` (one signature): one key
could undo a lockdown and make the lanes accept grants again. The device must
refuse them while the lane is in lockdown; two people still release it.
"""

from __future__ import annotations

import pytest

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from tests._gate_helpers import lane_config
from tests.security._redteam import RESULTS, Keys, result_of


@pytest.fixture
def gate(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200).start()
    keys = Keys(tmp_path / "keys")
    base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                       trust={"central_keys": keys.trusted(), "clock_skew_s": 60}, **lane_config(tmp_path, sim))
    collector = mqtt_collector(mosquitto, [RESULTS])
    edge_daemon(base_config)
    yield mosquitto, collector, keys, sim
    sim.stop()


def _lockdown(broker, collector, keys, sim, target="lane1-ts"):
    if target == "gate":
        doc = keys.command("ops", target="gate", name="mode", args={"mode": "lockdown", "reason": "incident"})
    else:
        doc = keys.command("ops", target="lane1-ts", name="lockdown")
    got = result_of(collector, broker, doc)
    assert got["status"] == "ok", got
    assert sim.devices[1].mode == m.Mode.LOCKDOWN


def test_one_key_cannot_leave_a_lockdown_by_locking_and_two_people_can(gate):
    broker, collector, keys, sim = gate
    # Control: outside a lockdown, lock is one signature, as documented.
    got = result_of(collector, broker, keys.command("ops", target="lane1-ts", name="lock"))
    assert got["status"] == "ok" and got["result"]["mode"] == "locked", got

    _lockdown(broker, collector, keys, sim)
    locks = len(sim.received(m.Lock))
    got = result_of(collector, broker, keys.command("ops", target="lane1-ts", name="lock"))
    # The lane is closed either way; the lock is answered without ending the lockdown.
    assert got["status"] == "ok" and got["result"]["mode"] == "lockdown", got
    assert "release" in got["result"]["detail"], got
    assert sim.devices[1].mode == m.Mode.LOCKDOWN
    assert len(sim.received(m.Lock)) == locks, "a LOCK reached the controller in lockdown"
    # The lane still refuses grants: the lockdown held.
    grant = result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="grant"))
    assert grant["status"] == "failed" and "lockdown" in grant["detail"], grant

    # Positive control: two people release it.
    got = result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="release"))
    assert got["status"] == "ok" and got["result"]["mode"] == "locked", got
    assert sim.devices[1].mode == m.Mode.LOCKED


def test_one_key_cannot_take_a_locked_down_gate_out_of_service_and_two_can_end_it(gate):
    broker, collector, keys, sim = gate
    _lockdown(broker, collector, keys, sim, target="gate")
    got = result_of(collector, broker, keys.command("ops", target="gate", name="mode",
                                                    args={"mode": "out_of_service", "reason": "maintenance"}))
    assert got["status"] == "failed", got
    assert "lockdown" in got["detail"] and "mode normal" in got["detail"], got
    assert sim.devices[1].mode == m.Mode.LOCKDOWN
    status = result_of(collector, broker, keys.command("ops", target="gate", name="status"))
    assert status["result"]["mode"] == "lockdown", status

    # Positive control: two people end the lockdown; then out_of_service is one person again.
    got = result_of(collector, broker, keys.command("ops", "security", target="gate", name="mode",
                                                    args={"mode": "normal", "reason": "incident over"}))
    assert got["status"] == "ok", got
    assert sim.devices[1].mode == m.Mode.LOCKED
    got = result_of(collector, broker, keys.command("ops", target="gate", name="mode",
                                                    args={"mode": "out_of_service", "reason": "maintenance"}))
    assert got["status"] == "ok", got
