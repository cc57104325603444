"""Red team: a clock set back (dead RTC battery, rogue NTP) revives what has ended.

The device keeps a time floor (edge.commands.seen): a wall time it has already
seen, advanced by its uptime. Commands, key expiry and x-ray freshness were
judged by it; these attacks show the rest of the gate is too. Each test starts
a real daemon whose floor is an hour ahead of the wall clock (the device ran
an hour more, then its clock was set back an hour), and checks that:

- a card whose holder's ``valid_until`` has passed at the real time is refused
  at the reader, though the wall clock finds it valid (positive control: a
  holder valid at the real time is granted);
- a directory signed by a directory key retired (its roles file's
  ``expires``) before the real time is refused, though the wall clock finds
  the key valid (positive control: central's directory, issued at the real
  time, is taken; the wall clock alone called it "dated ahead");
- a visitor whose booked visit ended before the real time is refused by the
  lane camera (``expired``), though the wall clock finds the visit still on
  (positive control: a visitor whose visit goes on is verified and let through);
- a remote config document that expired before the real time is refused
  (positive control: central's document issued at the real time applies);
- a tablet's learning catalog that expired before the real time is refused
  (positive control: central's catalog issued at the real time is taken);
- central's dose records issued at the real time are counted (the wall clock
  alone refused them as "in the future": their dose went uncounted, the unsafe
  side), and later ones signed by a key retired before the real time are refused.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from drivers.sim.turnstile import TurnstileSim
from edge.cli import cli
from edge.commands.seen import SeenIds
from edge.signing import generate_keypair, load_private_key
from edge.trust.roles import write_roles
from edge.update.remote_config import build_document
from tests._face_helpers import template
from tests._gate_helpers import OTHER, VISITOR, last_seq, show, wait_event
from tests._perimeter_helpers import (
    SITE,
    Perimeter,
    card_decision,
    publish_retained,
    signed_directory,
)
from tests._remote_config_helpers import DEVICE, device_config, keys, wait_events  # noqa: F401
from tests._remote_config_helpers import publish as publish_config

AHEAD = timedelta(hours=1)  # how far the real time (the floor) is past the wall clock


def set_floor_ahead(state_dir) -> datetime:
    """The device has already seen a time AHEAD past what its wall clock says: the real time."""
    real_now = datetime.now(UTC) + AHEAD
    state_dir.mkdir(parents=True, exist_ok=True)
    SeenIds(state_dir, clock=real_now.timestamp).close()
    return real_now


# -- the perimeter: cards and the directory --------------------------------------------------

ENDED, VALID = (7, 2001), (7, 2002)


@pytest.fixture
def perimeter(tmp_path, base_config, edge_daemon, mosquitto):
    p = Perimeter(tmp_path, base_config)
    # A key central retires in half an hour (its roles file's expires): at the real time it has ended.
    key, pub, kid = generate_keypair(tmp_path / "keys", "retired", ["directory"])
    write_roles(pub, ["directory"], expires=datetime.now(UTC) + timedelta(minutes=30), kid=kid)
    p.config["trust"]["central_keys"].append(str(pub))
    p.config["mqtt"] = {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5}
    wall = datetime.now(UTC)
    holders = [  # a contractor whose access ended 30 minutes before the real time; one valid for 2 hours
        {"id": "C-ENDED", "kind": "contractor", "credentials": ["7:2001"],
         "valid_until": (wall + timedelta(minutes=30)).isoformat()},
        {"id": "C-VALID", "kind": "contractor", "credentials": ["7:2002"],
         "valid_until": (wall + timedelta(hours=2)).isoformat()}]
    (p.tmp_path / "state" / "gate-directory.json").write_text(
        json.dumps(signed_directory(p.central_key, holders, wall.isoformat())))
    daemon = edge_daemon(p.config, start=False)
    real_now = set_floor_ahead(daemon.state_dir)
    daemon.start()
    wait_event(daemon.state_dir, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
    yield p, daemon, mosquitto, load_private_key(key), holders, real_now
    p.stop()


def test_a_card_ended_by_the_time_floor_is_refused_when_the_clock_is_set_back(perimeter):
    p, daemon, _broker, _retired, _holders, _real_now = perimeter
    state = daemon.state_dir
    d = card_decision(p, state, ENDED)
    assert (d["outcome"], d["reason"]) == ("deny", "unknown_credential"), d
    assert "validity ended" in d["detail"], d
    wait_event(state, "system.clock_jumped_back", what="the clock-back alarm")
    # Positive control: a holder still valid at the real time goes through.
    ok = card_decision(p, state, VALID)
    assert ok["outcome"] == "grant", ok


def test_a_directory_signed_by_a_key_retired_by_the_time_floor_is_refused(perimeter):
    p, daemon, broker, retired, holders, real_now = perimeter
    state = daemon.state_dir
    topic = f"edge/v1/{SITE}/gate/directory"
    # Whoever kept the retired key renews the ended card, dated at the real time.
    renewed = [{**h, "valid_until": (real_now + timedelta(days=30)).isoformat()} for h in holders]
    mark = last_seq(state)
    publish_retained(broker, topic, signed_directory(retired, renewed, real_now.isoformat()))
    rejected = wait_event(state, "gate.directory_rejected", after=mark, what="the retired key's directory")
    assert (rejected["priority"], rejected["payload"]["problem"]) == ("alarm", "signature"), rejected
    d = card_decision(p, state, ENDED)
    assert (d["outcome"], d["reason"]) == ("deny", "unknown_credential"), d
    # Positive control: central's own directory, issued at the real time (an hour ahead of the
    # wall clock: refused as "dated ahead" by the wall clock alone), is taken and renews the card.
    mark = last_seq(state)
    publish_retained(broker, topic, signed_directory(p.central_key, renewed, (real_now + timedelta(seconds=1)).isoformat()))
    wait_event(state, "gate.directory_applied", after=mark, what="central's directory applied")
    assert card_decision(p, state, ENDED)["outcome"] == "grant"


# -- the lane camera: a visitor's booked visit ---------------------------------------------------


@pytest.fixture
def visitor_lane(tmp_path, base_config, edge_daemon):
    from drivers.camera.gallery import Gallery, Subject

    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    frames = tmp_path / "frames"
    frames.mkdir()
    base_config.update(
        drivers=[{"name": "lane1-ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": sim.path,
                  "baudrate": 115200, "reconnect_max_s": 0.5},
                 {"name": "lane1-face", "kind": "camera.face", "source": str(frames), "loop": True,
                  "liveness": "none", "max_fps": 10, "mode": "verify"}],
        gate={"lanes": {"lane1": {"turnstile": "lane1-ts", "camera": "lane1-face", "flows": [
            {"direction": "in", "role": "visitor", "steps": [{"kind": "verify", "timeout_s": 20},
                                                             {"kind": "grant", "timeout_s": 5}]}]}}})
    gallery = Gallery(base_config["state_dir"])
    try:  # a visit that ended 30 minutes before the real time; one that goes on for an hour more
        gallery.upsert(Subject("V-ENDED", "visitor", [template(f"{VISITOR}_1")],
                               valid_until=time.time() + 1800))
        gallery.upsert(Subject("V-ON", "visitor", [template(f"{OTHER}_1")], valid_until=time.time() + 7200))
    finally:
        gallery.close()
    daemon = edge_daemon(base_config, start=False)
    set_floor_ahead(daemon.state_dir)
    daemon.start()
    yield daemon, tmp_path
    sim.stop()


def _visit(daemon, tmp_path, who: str, booking: str, subject: str) -> tuple[dict, int]:
    show(tmp_path, who)
    mark = last_seq(daemon.state_dir)
    out = CliRunner().invoke(cli, ["--config", str(daemon.config_path), "gate", "present", "lane1",
                                   "--booking", booking, "--subject", subject, "--json"])
    assert out.exit_code == 0, out.output
    return wait_event(daemon.state_dir, "gate.decision", after=mark, what=f"the decision on {booking}",
                      timeout=60)["payload"], mark


def test_a_visit_ended_by_the_time_floor_is_refused_by_the_camera_when_the_clock_is_set_back(visitor_lane):
    daemon, tmp_path = visitor_lane
    state = daemon.state_dir
    d, mark = _visit(daemon, tmp_path, VISITOR, "BK-1", "V-ENDED")
    assert (d["outcome"], d["reason"]) == ("deny", "face_not_verified"), d
    failed = wait_event(state, "biometric.verify_failed", after=mark, what="the camera's refusal")["payload"]
    assert (failed["subject_id"], failed["reason"]) == ("V-ENDED", "expired"), failed
    # Positive control: a visitor whose visit is still on at the real time is verified and let through.
    d, _ = _visit(daemon, tmp_path, OTHER, "BK-2", "V-ON")
    assert (d["outcome"], d["subject"]) == ("grant", "V-ON"), d


# -- remote configuration ----------------------------------------------------------------------


def test_a_remote_config_expired_by_the_time_floor_is_refused_when_the_clock_is_set_back(
        mosquitto, edge_daemon, device_config, keys):  # noqa: F811
    daemon = edge_daemon(device_config, start=False)
    real_now = set_floor_ahead(daemon.state_dir)
    daemon.start()
    key = keys["config"][0]
    # Signed for a day that ended 30 minutes before the real time: by the wall clock, still valid.
    expired = build_document({"drivers.hb1.rate": 9}, site=SITE, device=DEVICE, version=1, keys=[key],
                             issued_at=real_now - timedelta(days=1, minutes=30), ttl_s=24 * 3600)
    publish_config(mosquitto, expired)
    refused = wait_events(daemon, "config.refused")[0]
    assert (refused["priority"], refused["payload"]["problem"]) == ("alarm", "expired"), refused
    assert not (daemon.workdir / "edge.remote.json").exists()
    # Positive control: central's document issued at the real time applies.
    publish_config(mosquitto, build_document({"drivers.hb1.rate": 9}, site=SITE, device=DEVICE, version=2,
                                             keys=[key], issued_at=real_now))
    assert wait_events(daemon, "config.applied")[0]["payload"]["version"] == 2


# -- a tablet's learning catalog ---------------------------------------------------------------


def test_a_learning_catalog_expired_by_the_time_floor_is_refused_when_the_clock_is_set_back(
        tmp_path, mosquitto, edge_daemon):
    from edge import signing
    from edge.localapi.client import ApiUnavailable, call_json
    from edge.testing.wait import wait_for
    from services.learning.protocol import catalog_topic

    key_path, pub, _ = signing.generate_keypair(tmp_path / "keys", "central")
    key = signing.load_private_key(key_path)
    daemon = edge_daemon({"device_id": "tab-1", "site": SITE, "role": "tablet", "state_dir": str(tmp_path / "state"),
                          "logging": {"level": "info", "format": "json"}, "drivers": [],
                          "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                          "trust": {"central_keys": [str(pub)]}}, start=False)
    real_now = set_floor_ahead(daemon.state_dir)
    daemon.start()

    def catalog(version: int, issued: datetime, days: float) -> dict:
        return signing.sign({"type": "learning.catalog", "site": SITE, "version": version,
                             "issued_at": issued.isoformat(), "expires_at": (issued + timedelta(days=days)).isoformat(),
                             "chunk_size": 65536, "courses": [], "assignments": []}, key)

    def version():
        try:
            code, body = call_json(daemon.state_dir / "api.sock", "GET", "/v1/learning/status", timeout=5)
        except ApiUnavailable:
            return None
        return body.get("catalog_version") if code == 200 else None

    # Valid for a day that ended 30 minutes before the real time: by the wall clock, still valid.
    publish_retained(mosquitto, catalog_topic(SITE), catalog(1, real_now - timedelta(days=1, minutes=30), 1))
    rejected = wait_event(daemon.state_dir, "learning.catalog_rejected", what="the expired catalog refused")
    assert rejected["priority"] == "alarm" and "expired" in rejected["payload"]["reason"], rejected
    assert version() is None
    # Positive control: central's catalog issued at the real time is taken.
    publish_retained(mosquitto, catalog_topic(SITE), catalog(2, real_now, 30))
    wait_for(lambda: version() == 2, what="central's catalog taken", timeout=20)


# -- dose records from central -------------------------------------------------------------------


def test_dose_records_are_counted_and_a_retired_keys_refused_when_the_clock_is_set_back(
        tmp_path, mosquitto, edge_daemon, base_config):
    from edge.signing import sign

    key, pub, _ = generate_keypair(tmp_path / "keys", "directory", ["directory"])
    retired_key, retired_pub, kid = generate_keypair(tmp_path / "keys", "retired", ["directory"])
    write_roles(retired_pub, ["directory"], expires=datetime.now(UTC) + timedelta(minutes=30), kid=kid)
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(pub), str(retired_pub)]},
        drivers=[{"name": "xr", "kind": "xray.folder", "path": str(tmp_path / "inbox")}])
    daemon = edge_daemon(base_config, start=False)
    real_now = set_floor_ahead(daemon.state_dir)
    daemon.start()
    topic = f"edge/v1/{SITE}/xray/dose"

    def records(usv: float, signer, at: datetime) -> dict:
        return sign({"type": "xray.dose_records", "site": SITE, "issued_at": at.isoformat(), "subjects": [
            {"subject": "A1234BC", "origins": [{"site": "site-2", "total_usv": usv, "as_of": at.isoformat()}]}]},
            load_private_key(signer))

    def total() -> float:
        return json.loads(daemon.cli("xray", "check", "A1234BC", "--json").stdout)["total_usv"]

    # Central's records, issued at the real time (an hour ahead of the wall clock: refused as "in the
    # future" by the wall clock alone, so their dose went uncounted), are applied and counted.
    mark = last_seq(daemon.state_dir)
    publish_retained(mosquitto, topic, records(240.0, key, real_now))
    wait_event(daemon.state_dir, "xray.dose_records_applied", after=mark, what="central's records applied")
    assert total() == 240.0
    # The key retired 30 minutes before the real time lowers the person's dose at site-2: refused.
    mark = last_seq(daemon.state_dir)
    publish_retained(mosquitto, topic, records(0.0, retired_key, real_now + timedelta(seconds=1)))
    rejected = wait_event(daemon.state_dir, "xray.dose_records_rejected", after=mark, what="the retired key refused")
    assert rejected["priority"] == "alarm" and "signature" in rejected["payload"]["reason"], rejected
    assert total() == 240.0
