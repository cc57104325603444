"""The gate policy end to end: `edge run` in a subprocess, the turnstile simulator on a pty, real
photos for the face camera, the scanner emulator's result files, a real broker, kill -9.

One daemon plays every scenario online, then again with the broker stopped; the
decisions must be the same, and every one of them must reach the subscriber
once the broker is back.
"""

from __future__ import annotations

import getpass
import json

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.signing import generate_keypair, load_private_key
from services.gate.contract import conforms
from tests._gate_helpers import (
    OVER,
    STAFF,
    VISITOR,
    by_id,
    enroll,
    events,
    lane_config,
    last_seq,
    scan,
    show,
    wait_event,
)
from tests._trust_helpers import SECOND_OPERATOR_CONFIG, approve

SITE, DEVICE = "site-1", "dev-1"
# step_timeout_denied waits this out twice; the others scan (or kill -9) well within it: the scan
# is in the driver's folder ~0.1 s after the dose check, taken after 0.1 s poll + 0.1 s settle
_XRAY_TIMEOUT_S = 2.0


class Lane:
    """The test's hands at the lane: camera view, booking desk, scanner, officer, supervisor."""

    def __init__(self, daemon, tmp_path, sim):
        self.daemon, self.tmp_path, self.sim = daemon, tmp_path, sim
        self.state = daemon.state_dir

    def cli(self, *args, ok: bool = True):
        """The CLI in this process (the daemon is in its own): saves an interpreter start per call."""
        from click.testing import CliRunner

        from edge.cli import cli

        out = CliRunner().invoke(cli, ["--config", str(self.daemon.config_path), "gate", *args, "--json"])
        if not ok:
            return out
        assert out.exit_code == 0, (args, out.output)
        return json.loads(out.stdout)

    def approved(self, *args) -> dict:
        """A two-person command: asked here (root), approved by a second operator (nobody)."""
        asked = self.cli(*args, ok=False)
        assert asked.exit_code == 1, asked.output
        reply = json.loads(asked.stdout)["result"]
        assert reply["reason"] == "under_signed", reply
        done = approve(self.state, reply["result"]["approval_id"])
        assert done["status"] == "ok", done
        return done["result"]

    def text(self, *args) -> str:
        from click.testing import CliRunner

        from edge.cli import cli

        out = CliRunner().invoke(cli, ["--config", str(self.daemon.config_path), "gate", *args])
        assert out.exit_code == 0, (args, out.output)
        return out.stdout

    def decision(self, after: int, what: str, timeout: float = 30.0) -> dict:
        return wait_event(self.state, "gate.decision", after=after, timeout=timeout, what=what)

    def present(self, booking: str, subject: str) -> tuple[dict, int]:
        mark = last_seq(self.state)
        self.cli("present", "lane1", "--booking", booking, "--subject", subject, "--dir", "in")
        return mark

    def at_xray(self, after: int) -> dict:
        """Wait until the approach has passed its dose check (the scan may now happen)."""
        return wait_event(self.state, "gate.dose_check", after=after, what="the dose check")


def evidence_types(state, decision: dict) -> list[str]:
    ids = by_id(state)
    return sorted(ids[e]["type"] for e in decision["payload"]["evidence"])


def visitor_passes(lane: Lane) -> dict:
    grants = len(lane.sim.received(m.Grant))
    show(lane.tmp_path, VISITOR)
    mark = lane.present("BK-1", "V-1")
    lane.at_xray(mark)
    scan(lane.tmp_path, "V-1", "clear")
    d = lane.decision(mark, "the visitor's grant")
    assert d["payload"]["outcome"] == "grant", d
    assert evidence_types(lane.state, d) == ["biometric.verified", "command.result", "command.result",
                                             "gate.dose_check", "turnstile.granted", "xray.scan"]
    passage = wait_event(lane.state, "gate.passage", after=d["seq"], what="the passage")
    assert passage["payload"]["passed"] and passage["payload"]["approach_id"] == d["payload"]["approach_id"]
    assert lane.sim.received(m.Grant)[grants:] == [m.Grant("in", 1, 5)]
    return d


def wrong_face_denied(lane: Lane) -> dict:
    show(lane.tmp_path, VISITOR)  # V-2's booking, but biden stands there
    mark = lane.present("BK-2", "V-2")
    d = lane.decision(mark, "the wrong face's denial")
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("deny", "face_not_verified"), d
    assert evidence_types(lane.state, d) == ["biometric.verify_failed", "command.result"]
    return d


def over_dose_held(lane: Lane) -> list[dict]:
    show(lane.tmp_path, OVER)
    mark = lane.present("BK-3", "V-3")
    held = lane.decision(mark, "the hold")
    assert (held["payload"]["outcome"], held["payload"]["reason"]) == ("hold", "dose_limit"), held
    assert held["priority"] == "alarm"
    assert "gate.dose_check" in evidence_types(lane.state, held)
    assert lane.cli("status")["lanes"]["lane1"]["approach"]["state"] == "held"
    assert "lane1: visitor V-3 in: held at dose_check" in lane.text("status")
    said = lane.text("override", "lane1", "--deny", "--dir", "in", "--reason", "search by hand instead")
    assert said.startswith(f"lane1 in: DENY by {getpass.getuser()} (officer_override: search by hand instead)")
    d = lane.decision(held["seq"], "the officer's denial")
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("deny", "officer_override")
    assert d["payload"]["override"]["operator"] == getpass.getuser()
    assert d["payload"]["approach_id"] == held["payload"]["approach_id"]
    return [held, d]


def suspicious_scan_held(lane: Lane) -> list[dict]:
    show(lane.tmp_path, VISITOR)
    mark = lane.present("BK-4", "V-1")
    lane.at_xray(mark)
    scan(lane.tmp_path, "V-1", "suspicious")
    held = lane.decision(mark, "the hold")
    assert (held["payload"]["outcome"], held["payload"]["reason"]) == ("hold", "scan_not_clear"), held
    assert "xray.scan" in evidence_types(lane.state, held)
    grants = len(lane.sim.received(m.Grant))
    lane.approved("override", "lane1", "--grant", "--dir", "in", "--reason", "searched: nothing found")
    d = lane.decision(held["seq"], "the officer's grant")
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("grant", "officer_override")
    assert len(lane.sim.received(m.Grant)) == grants + 1
    wait_event(lane.state, "gate.passage", after=d["seq"], what="the passage")
    return [held, d]


def step_timeout_denied(lane: Lane) -> dict:
    show(lane.tmp_path, VISITOR)
    mark = lane.present("BK-5", "V-1")  # nobody ever scans them
    d = lane.decision(mark, "the timeout", timeout=40)
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("deny", "step_timeout"), d
    assert d["payload"]["steps"][-1]["kind"] == "xray" and d["payload"]["steps"][-1]["result"] == "timeout"
    return d


def lockdown_denies(lane: Lane) -> list[dict]:
    grants = len(lane.sim.received(m.Grant))
    mode = lane.cli("mode", "lockdown", "--reason", "incident drill")
    assert mode["lanes"]["lane1"]["status"] == "ok" and lane.sim.devices[1].mode == m.Mode.LOCKDOWN
    out = []
    for booking, subject in (("BK-6", "V-1"), (None, None)):
        mark = last_seq(lane.state)
        if booking:
            lane.cli("present", "lane1", "--booking", booking, "--subject", subject)
        else:  # out/any only grants: presenting someone to it is a grant, two people
            lane.approved("present", "lane1", "--dir", "out")
        d = lane.decision(mark, "the lockdown denial")
        assert (d["payload"]["outcome"], d["payload"]["reason"], d["payload"]["mode"]) == \
            ("deny", "lockdown", "lockdown"), d
        out.append(d)
    asked = lane.cli("override", "lane1", "--grant", "--reason", "let me out", ok=False)
    held = json.loads(asked.stdout)["result"]
    assert asked.exit_code == 1 and held["reason"] == "under_signed"
    refused = approve(lane.state, held["result"]["approval_id"])  # even two people: no grant in lockdown
    assert refused["status"] == "failed" and "lockdown" in refused["detail"]
    lane.approved("mode", "normal", "--reason", "drill over")
    assert lane.sim.devices[1].mode == m.Mode.LOCKED and len(lane.sim.received(m.Grant)) == grants
    return out


def killed_mid_approach_never_grants(lane: Lane) -> None:
    """kill -9 while a visitor waits for the scan; the scan arrives after the restart: no grant."""
    show(lane.tmp_path, VISITOR)
    mark = lane.present("BK-7", "V-1")
    lane.at_xray(mark)
    approach = lane.cli("status")["lanes"]["lane1"]["approach"]["id"]
    grants = len(lane.sim.received(m.Grant))
    lane.daemon.kill()
    lane.daemon.start(timeout=60)
    d = wait_event(lane.state, "gate.decision", lambda e: e["payload"]["approach_id"] == approach,
                   what="the interrupted approach's decision")
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("deny", "interrupted"), d
    assert [s["kind"] for s in d["payload"]["steps"]] == ["verify", "dose_check", "xray"]
    rec = scan(lane.tmp_path, "V-1", "clear")  # the scan they were waiting for, too late
    stored = wait_event(lane.state, "xray.scan", lambda e: e["payload"]["scan_id"] == rec["scan_id"])
    assert lane.cli("status")["lanes"]["lane1"]["approach"] is None
    later = events(lane.state, "gate.decision", after=d["seq"])
    assert not [e for e in later if e["payload"]["outcome"] == "grant"], later
    assert len(lane.sim.received(m.Grant)) == grants and stored["seq"] > d["seq"]


def central_sets_the_mode(lane: Lane, broker, key) -> None:
    """Central's signed `mode` command over MQTT takes the same path as the supervisor's."""
    mark = last_seq(lane.state)
    doc = build_command(target="gate", name="mode", args={"mode": "out_of_service", "reason": "lane maintenance"},
                        ttl_s=60, device=DEVICE, site=SITE, keys=[load_private_key(key)])
    publish_command(broker.uri, SITE, DEVICE, doc)
    mode = wait_event(lane.state, "gate.mode", after=mark, what="central's mode change")
    assert mode["payload"]["mode"] == "out_of_service" and mode["payload"]["set_by"].startswith("central:")
    assert mode["payload"]["command_id"] == doc["id"]
    mark = last_seq(lane.state)
    lane.cli("present", "lane1", "--booking", "BK-8", "--subject", "V-1")
    assert lane.decision(mark, "the out-of-service denial")["payload"]["reason"] == "out_of_service"
    lane.approved("mode", "normal", "--reason", "maintenance done")


SCENARIOS = [visitor_passes, wrong_face_denied, over_dose_held, suspicious_scan_held, step_timeout_denied,
             lockdown_denies]


def _flatten(results) -> list[dict]:
    out = []
    for r in results:
        out += r if isinstance(r, list) else [r]
    return out


def test_every_scenario_decides_the_same_online_and_offline(tmp_path, mosquitto, mqtt_collector,
                                                            edge_daemon, base_config):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    try:
        key, pub, _ = generate_keypair(tmp_path / "keys", "central")
        base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                           trust={"central_keys": [str(pub)]}, commands=SECOND_OPERATOR_CONFIG,
                           **lane_config(tmp_path, sim, xray_timeout_s=_XRAY_TIMEOUT_S))
        enroll(base_config["state_dir"])
        scan(tmp_path, "V-3", dose_usv=300.0)  # over the 250 µSv limit before they ever come
        show(tmp_path, STAFF)  # a staff member walks up first: identified 1:N, let in
        collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/gate")
        daemon = edge_daemon(base_config)
        lane = Lane(daemon, tmp_path, sim)
        staff = lane.decision(0, "the staff member's grant", timeout=60)
        assert (staff["payload"]["role"], staff["payload"]["outcome"], staff["payload"]["subject"]) == \
            ("staff", "grant", "S-1")
        assert "biometric.identified" in evidence_types(lane.state, staff)
        wait_event(lane.state, "xray.dose_limit", what="V-3's earlier dose in the ledger")

        online = _flatten(s(lane) for s in SCENARIOS)
        assert all(d["payload"]["online"] for d in online)
        central_sets_the_mode(lane, mosquitto, key)
        mosquitto.stop()
        offline = _flatten(s(lane) for s in SCENARIOS)
        assert not any(d["payload"]["online"] for d in offline)
        key = [(d["payload"]["outcome"], d["payload"]["reason"], d["payload"]["role"]) for d in online]
        assert key == [(d["payload"]["outcome"], d["payload"]["reason"], d["payload"]["role"]) for d in offline]

        mosquitto.start()
        stored = {e["id"] for e in events(lane.state, "gate.decision")}
        collector.wait_for(lambda c: stored <= {e["id"] for e in c.events("gate.decision")}, 60,
                           "every decision at the subscriber")
        killed_mid_approach_never_grants(lane)
        published = events(lane.state, "gate.*")
        assert {e["type"] for e in published} >= {"gate.decision", "gate.passage", "gate.dose_check", "gate.mode"}
        for e in published:  # the payloads central reads in docs/asyncapi.json
            conforms(e)
    finally:
        sim.stop()
