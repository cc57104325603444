"""Red team: open a lane with one key, or one operator, by "presenting" nobody.

``gate present`` is ``operate`` (one signature, one operator) because every
step of the flow it starts still applies. But a flow may have no step that
checks anyone: the shipped example lets ``out``/``any`` through with just
``grant``. Presenting a person to that flow, with no booking, is a grant by
another name: one stolen key (or one operator) opened the lane outwards, and
anyone could walk out. Such a ``present`` is a barrier command: two people.
Presenting a booking to a flow that checks the face stays one person.
"""

from __future__ import annotations

import pytest

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from edge.commands.local import send
from tests._gate_helpers import lane_config
from tests.security._redteam import RESULTS, Keys, result_of

OUT = {"lane": "lane1", "direction": "out"}


@pytest.fixture
def gate(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    keys = Keys(tmp_path / "keys")
    base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                       trust={"central_keys": keys.trusted(), "clock_skew_s": 60}, **lane_config(tmp_path, sim))
    collector = mqtt_collector(mosquitto, [RESULTS])
    daemon = edge_daemon(base_config)
    yield mosquitto, collector, keys, sim, daemon
    sim.stop()


def test_presenting_nobody_to_a_flow_that_only_grants_needs_two_people(gate):
    broker, collector, keys, sim, daemon = gate
    got = result_of(collector, broker, keys.command("ops", target="gate", name="present", args=OUT))
    assert (got["status"], got["reason"]) == ("rejected", "under_signed"), got
    assert "barrier" in got["detail"]
    local = send(daemon.state_dir, "gate", "present", OUT)  # one operator on the device
    assert (local["status"], local["reason"]) == ("rejected", "under_signed"), local
    assert local["result"]["approval_id"].startswith("approve-")
    assert not sim.wait_for(lambda: sim.received(m.Grant), 2), "the lane opened for one person"

    # Positive controls: presenting a booking to the visitor flow (which verifies the face) is
    # one person; two people may let someone out through the grant-only flow.
    booking = result_of(collector, broker, keys.command("ops", target="gate", name="present", args={
        "lane": "lane1", "direction": "in", "booking_id": "BK-1", "subject_id": "V-1"}))
    assert booking["status"] == "ok" and booking["result"]["state"] != "decided", booking
    denied = result_of(collector, broker, keys.command("ops", target="gate", name="override", args={
        "lane": "lane1", "direction": "in", "action": "deny", "reason": "end the test approach"}))
    assert denied["status"] == "ok", denied
    two = result_of(collector, broker, keys.command("ops", "security", target="gate", name="present", args=OUT))
    assert two["status"] == "ok", two
    assert sim.wait_for(lambda: sim.received(m.Grant), 10)
