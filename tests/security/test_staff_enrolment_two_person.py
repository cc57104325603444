"""Red team: one field engineer enrolls a stranger's face as staff, a standing pass through the gate.

`edge biometrics enroll --role staff` by one account is held by the daemon, never written: the
lane camera still does not know the face, the same account cannot approve it, the site's
one-person override does not cover it, and a request that could not be enrolled is refused
before anyone is asked. A second account's `edge cmd approve` enrolls it (positive control):
then the lane identifies the face, and the enrolment reaches central as an alarm naming both.
"""

from __future__ import annotations

import base64
import json

import pytest

from drivers.camera.contract import LocalEnrollment
from drivers.camera.gallery import templates_sha256
from edge.commands.local import approve as approve_as_me
from edge.commands.local import pending, send
from edge.testing.wait import wait_for
from tests._face_helpers import photo, template
from tests._gate_helpers import STAFF, last_seq, show, show_nobody, wait_event
from tests._trust_helpers import SECOND_OPERATOR_CONFIG, approve, as_second_operator
from tests.security._redteam import SITE

GALLERY_EVENTS = f"edge/v1/{SITE}/+/events/biometric"


@pytest.fixture
def camera_daemon(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    def make(**commands):
        frames = tmp_path / "frames"
        frames.mkdir(exist_ok=True)
        base_config.update(
            mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
            commands={**SECOND_OPERATOR_CONFIG, **commands},
            drivers=[{"name": "lane1-face", "kind": "camera.face", "source": str(frames), "loop": True,
                      "liveness": "none", "max_fps": 10, "mode": "identify"}])
        return edge_daemon(base_config), mqtt_collector(mosquitto, [GALLERY_EVENTS])
    return make


def _identified(state, after: int) -> dict:
    return wait_event(state, "biometric.*", lambda e: e["type"] in ("biometric.identified", "biometric.unknown"),
                      after=after, what="the lane camera's decision", timeout=30)


def test_one_operator_cannot_enroll_staff_and_two_can(tmp_path, camera_daemon):
    daemon, collector = camera_daemon()
    state = daemon.state_dir
    out = daemon.cli("biometrics", "enroll", "--subject", "S-9", "--role", "staff", "--reason", "new officer",
                     str(photo(f"{STAFF}_1")), "--json", timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    held = json.loads(out.stdout)
    assert held["state"] == "held" and "edge cmd approve approve-" in held["error"], held
    mark = last_seq(state)
    show(tmp_path, STAFF)  # the stranger walks up to the lane: nobody knows them yet
    assert _identified(state, mark)["type"] == "biometric.unknown"

    [waiting] = as_second_operator(state, {"list_pending": True})["pending"]
    assert (waiting["target"], waiting["name"], waiting["requested_by"]) == ("biometrics", "enroll_staff", "root")
    assert waiting["args"]["templates"] == "[redacted]" and waiting["args"]["template_count"] == 1
    assert waiting["args"]["sha256"] == held["template_sha256"] and waiting["args"]["subject_id"] == "S-9"
    own = approve_as_me(state, held["approval_id"])  # the requester approving themself
    assert own["reason"] == "under_signed" and "second operator" in own["detail"]

    done = approve(state, held["approval_id"])  # positive control: a second account approves
    assert done["status"] == "ok", done
    assert (done["operator"], done["approved_by"], done["result"]["role"]) == ("root", "nobody", "staff")
    mark = last_seq(state)
    show_nobody(tmp_path)  # the lane empties, then the new officer comes back: a new approach
    wait_for(lambda: not send(state, "lane1-face", "status", {})["result"]["lane"]["active"], 20,
             "the lane camera's approach ended", interval=0.1)
    show(tmp_path, STAFF)
    seen = _identified(state, mark)
    assert (seen["type"], seen["payload"].get("subject_id")) == ("biometric.identified", "S-9"), seen
    alarm = collector.wait_for(lambda c: c.events("biometric.local_enrollment"), 20, "the enrolment alarm")[0]
    assert alarm["priority"] == "alarm"
    assert (alarm["payload"]["operator"], alarm["payload"]["approved_by"]) == ("root", "nobody")
    LocalEnrollment.model_validate(alarm["payload"])


def _args(**extra) -> dict:
    raw = [template(f"{STAFF}_1")]
    return {"subject_id": "S-9", "templates": [base64.b64encode(t).decode() for t in raw], "template_count": 1,
            "sha256": templates_sha256(raw), "reason": "new officer", **extra}


def test_no_one_person_way_around_it_and_nothing_that_cannot_run_is_held(camera_daemon):
    daemon, _ = camera_daemon(allow_single_person_override=True)
    state = daemon.state_dir
    one = send(state, "biometrics", "enroll_staff", _args(), "new officer", single_person=True)
    assert one["reason"] == "under_signed" and "not a single passage" in one["detail"], one
    for args, problem in ((_args(sha256="0" * 64), "is not the hash of these templates"),
                          (_args(role="visitor"), "role: unknown argument"),
                          (_args(templates=["AAAA"]), "expected 512 bytes")):
        refused = send(state, "biometrics", "enroll_staff", args, "new officer")
        assert (refused["status"], refused["reason"]) == ("rejected", "malformed"), refused
        assert problem in refused["detail"] and "refused before anyone is asked" in refused["detail"], refused
    assert pending(state) == []
    held = send(state, "biometrics", "enroll_staff", _args(), "new officer")  # right, so held
    assert (held["status"], held["reason"]) == ("rejected", "under_signed"), held
    assert [w["name"] for w in pending(state)] == ["enroll_staff"]
