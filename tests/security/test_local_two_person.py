"""Red team: a field engineer alone at the device's shell, on the control socket.

A barrier or erase command from one local account is held, never run; the same
account cannot approve its own request; a second account can (positive control).
The one-person override exists only where the site opts in: one passage, a
reason, an alarm to central, never a mode change.
"""

from __future__ import annotations

import grp
import json
import os
import re
from pathlib import Path

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

    def make(extra_drivers=(), **commands):
        sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
        sims.append(sim)
        lane = lane_config(tmp_path, sim)
        lane["drivers"] += list(extra_drivers)
        base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                           commands={**SECOND_OPERATOR_CONFIG, **commands}, **lane)
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
                               ("lane1-face", "forget_entry", {"key": "BK-1"})):
        held = send(state, target, name, args, "testing")
        assert (held["status"], held["reason"]) == ("rejected", "under_signed"), held
        assert held["result"]["approval_id"].startswith("approve-")
    waiting = pending(state)
    assert [w["name"] for w in waiting] == ["mode", "override", "unlock", "forget_entry"]
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
    assert {w["name"] for w in listed} == {"mode", "override", "forget_entry"}


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


def test_a_request_that_would_fail_is_refused_before_a_second_operator_is_asked(gate_factory):
    """A colleague must never be asked to approve what cannot run: a two-letter reason, a
    lane that does not exist, a misspelt command. Each is refused at once, naming what is
    wrong, and nothing is held; the same request done right is held (positive control)."""
    daemon, _ = gate_factory()
    state = daemon.state_dir
    for target, name, args, problem in (
            ("gate", "override", {**GRANT, "reason": "ok"}, "reason: String should have at least 3"),
            ("gate", "override", {**GRANT, "lane": "lane9"}, "no gate lane named 'lane9'; lanes: lane1"),
            ("gate", "mode", {"mode": "free_passage"}, "reason: Field required"),
            ("gate", "open_all", {}, "gate has no command 'open_all'"),
            ("lane1-ts", "grant", {"passes": 0}, "passes: Input should be greater than or equal to 1"),
            ("lane1-ts", "grant", {"address": 9}, "no controller at address 9 on this line"),
            ("lane1-ts", "unlok", {}, "turnstile does not support command 'unlok'")):
        refused = send(state, target, name, args, "testing")
        assert (refused["status"], refused["reason"]) == ("rejected", "malformed"), refused
        assert problem in refused["detail"] and "refused before anyone is asked" in refused["detail"], refused
        assert "approval_id" not in (refused.get("result") or {})
    assert pending(state) == []
    out = daemon.cli("gate", "override", "lane1", "--grant", "--reason", "ok", "--json")
    assert out.returncode == 1 and "reason: String should have at least 3" in out.stdout, out.stdout + out.stderr
    assert pending(state) == []
    held = send(state, "gate", "override", GRANT, "testing")  # positive control: right, so held
    assert (held["status"], held["reason"]) == ("rejected", "under_signed"), held
    assert [w["name"] for w in pending(state)] == ["override"]


def test_a_misspelt_command_to_any_driver_is_refused_before_a_second_operator_is_asked(gate_factory, tmp_path):
    """Drivers whose every command is one-person (a heartbeat, a simulator, the camera's verify)
    or that take none (an x-ray folder) hold a misspelt name as an undeclared, so barrier,
    command: each driver's own check refuses it at once, as it refuses a bad argument."""
    daemon, _ = gate_factory(extra_drivers=[
        {"name": "hb", "kind": "sim.heartbeat", "rate": 1.0},
        {"name": "sim1", "kind": "sim.turnstile", "codec": "rs485-bus", "path": str(tmp_path / "tty-sim1")}])
    state = daemon.state_dir
    for target, name, args, problem in (
            ("hb", "pnig", {}, "sim.heartbeat does not support 'pnig'; supported: ping"),
            ("sim1", "stpe", {"steps": "passage in"}, "sim.turnstile supports 'step' and 'ping', not 'stpe'"),
            ("lane1-face", "forget_entyr", {"key": "BK-1"}, "camera.face does not support 'forget_entyr'"),
            ("lane1-face", "forget_entry", {"keys": "BK-1"}, "keys: unknown argument"),
            ("lane1-face", "forget_entry", {}, "forget_entry needs 'key' (the booking id) or 'all': true"),
            ("scanner1", "rescan", {}, "xray.folder takes no commands (not 'rescan')"),
            ("edge", "purge_residnet", {"resident": "r-1"}, "target 'edge' has no command 'purge_residnet'")):
        refused = send(state, target, name, args, "testing")
        assert (refused["status"], refused["reason"]) == ("rejected", "malformed"), refused
        assert problem in refused["detail"] and "refused before anyone is asked" in refused["detail"], refused
    assert pending(state) == []
    # Positive controls: spelt right, the camera's erase is held for a second operator and the
    # heartbeat's ping runs at once.
    held = send(state, "lane1-face", "forget_entry", {"key": "BK-1"}, "visitor left by the side door")
    assert (held["status"], held["reason"]) == ("rejected", "under_signed"), held
    assert send(state, "hb", "ping", {})["status"] == "ok"
    assert [w["name"] for w in pending(state)] == ["forget_entry"]


def test_an_operator_in_the_service_group_reaches_the_socket_through_the_units_state_directory(gate_factory):
    """On a device the state directory is made by systemd with the unit's StateDirectoryMode and
    the daemon's group: the second operator's account must get through it to control.sock by
    membership of that group alone (docs/security.md: operators join group edge), and an account
    outside it must not. Here the folder's group is `users`, standing in for `edge`."""
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "edge.service").read_text()
    mode = int(re.search(r"^StateDirectoryMode=(\d+)$", unit, re.M).group(1), 8)
    assert mode & 0o007 == 0, "others must get nothing in the state directory"
    service_group = grp.getgrnam("users").gr_gid
    daemon, _ = gate_factory()
    state = daemon.state_dir
    os.chown(state, -1, service_group)
    os.chmod(state, mode)
    held = send(state, "lane1-ts", "unlock", {}, "jammed")
    approval = held["result"]["approval_id"]
    with pytest.raises(AssertionError, match="Permission denied"):  # not in the group: the kernel refuses
        as_second_operator(state, {"approve": approval}, groups=[])
    done = as_second_operator(state, {"approve": approval}, groups=[service_group])
    assert done["status"] == "ok" and done["approved_by"] == "nobody", done


def test_the_second_operator_sees_the_request_before_it_runs(gate_factory):
    """`edge cmd approve` shows what it approves and asks; no answer, or no, runs nothing.
    (The request is nobody's, so root is the second operator here.)"""
    daemon, _ = gate_factory()
    state = daemon.state_dir
    held = as_second_operator(state, {"target": "lane1-ts", "name": "unlock", "args": {}, "reason": "jammed"})
    approval = held["result"]["approval_id"]
    for typed in ("n\n", None):  # a no, and no terminal at all
        out = daemon.cli("cmd", "approve", approval, input=typed)
        assert out.returncode == 1, out.stdout + out.stderr
        assert 'you approve: lane1-ts unlock {}  asked by nobody' in out.stdout and ": jammed" in out.stdout
        assert "not approved: nothing was run" in out.stdout + out.stderr
    scripted = daemon.cli("cmd", "approve", approval, "--json")
    assert scripted.returncode == 2 and "--json needs --yes" in json.loads(scripted.stdout)["error"]
    assert [w["approval_id"] for w in pending(state)] == [approval]  # still waiting, not run
    # The requester is refused by the daemon whatever the CLI does (its own check is a courtesy).
    assert approve(state, approval)["reason"] == "under_signed"
    assert [w["approval_id"] for w in pending(state)] == [approval]
