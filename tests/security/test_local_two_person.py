"""Red team: a field engineer alone at the device's shell, on the control socket.

A barrier or erase command from one local account is held, never run; the same
account cannot approve its own request; a second account can (positive control).
The one-person override exists only where the site opts in: one passage, a
reason, an alarm to central, never a mode change.
"""

from __future__ import annotations

import pytest

from drivers.sim.turnstile import TurnstileSim
from edge.commands.local import approve as approve_as_me
from edge.commands.local import pending, send
from edge.trust.contract import SinglePersonOverride
from tests._gate_helpers import lane_config
from tests._trust_helpers import SECOND_OPERATOR_CONFIG, approve, as_second_operator
from tests.security._redteam import RESULTS, SYSTEM, alarms


@pytest.fixture
def gate_factory(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    sims = []

    def make(**commands):
        sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
        sims.append(sim)
        base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                           commands={**SECOND_OPERATOR_CONFIG, **commands}, **lane_config(tmp_path, sim))
        collector = mqtt_collector(mosquitto, [RESULTS, SYSTEM])
        return edge_daemon(base_config), collector
    yield make
    for sim in sims:
        sim.stop()


GRANT = {"lane": "lane1", "direction": "in", "action": "grant", "reason": "escorted contractor"}


def test_one_operator_cannot_open_or_erase_and_two_can(gate_factory):
    daemon, _ = gate_factory()
    state = daemon.state_dir
    for target, name, args in (("gate", "mode", {"mode": "free_passage", "reason": "x" * 5}),
                               ("gate", "override", {**GRANT, "passes": 1}),
                               ("lane1-ts", "unlock", {}),
                               ("edge", "purge_resident", {"resident": "res-1"})):
        held = send(state, target, name, args, "testing")
        assert (held["status"], held["reason"]) == ("rejected", "under_signed"), held
        assert held["result"]["approval_id"].startswith("approve-")
    waiting = pending(state)
    assert [w["name"] for w in waiting] == ["mode", "override", "unlock", "purge_resident"]
    own = approve_as_me(state, waiting[2]["approval_id"])  # the requester approving themself
    assert own["reason"] == "under_signed" and "second operator" in own["detail"]
    # Positive control: a second account approves the unlock; it runs once, with both names.
    done = approve(state, waiting[2]["approval_id"])
    assert done["status"] == "ok" and done["approved_by"] == "nobody" and done["operator"] == "root", done
    again = approve(state, waiting[2]["approval_id"])
    assert again["status"] == "rejected" and "no pending request" in again["detail"]
    # Closing stays one person.
    assert send(state, "gate", "mode", {"mode": "lockdown", "reason": "incident"})["status"] == "ok"
    # The second operator sees what they approve.
    listed = as_second_operator(state, {"list_pending": True})["pending"]
    assert {w["name"] for w in listed} == {"mode", "override", "purge_resident"}


def test_single_person_override_only_where_allowed_and_always_an_alarm(gate_factory):
    daemon, collector = gate_factory(allow_single_person_override=True)
    state = daemon.state_dir
    many = send(state, "gate", "override", {**GRANT, "passes": 2}, "escort", single_person=True)
    assert many["reason"] == "under_signed" and "exactly one person" in many["detail"]
    mode = send(state, "gate", "mode", {"mode": "free_passage", "reason": "quick"}, "quick", single_person=True)
    assert mode["reason"] == "under_signed" and "not a single passage" in mode["detail"]
    one = send(state, "gate", "override", {**GRANT, "passes": 1}, "escorted contractor", single_person=True)
    assert one["status"] == "ok", one
    alarm = collector.wait_for(lambda c: alarms(c, "system.single_person_override"), 20, "the override alarm")
    assert alarm[0]["priority"] == "alarm" and alarm[0]["payload"]["operator"] == "root"
    SinglePersonOverride.model_validate(alarm[0]["payload"])


def test_single_person_override_is_off_by_default(gate_factory):
    daemon, _ = gate_factory()
    one = send(daemon.state_dir, "gate", "override", {**GRANT, "passes": 1}, "escort", single_person=True)
    assert one["reason"] == "under_signed" and "does not allow one-person overrides" in one["detail"]
