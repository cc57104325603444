"""A local staff enrolment is a barrier command (drivers/camera/staff.py), in-process.

The check that refuses a request before a second operator is asked, the held request as the
second operator sees it (no template), the component that writes only what two local operators
agreed on, and the gallery's own refusal of a one-person staff enrolment. The same flow through
a real daemon and the real CLI: tests/security/test_staff_enrolment_two_person.py.
"""

from __future__ import annotations

import base64
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from drivers.camera.gallery import Gallery, GalleryError, Subject, templates_sha256
from drivers.camera.staff import COMMAND, EFFECTS, TARGET, StaffEnrolment, check
from edge.commands.seen import SeenIds
from edge.commands.settings import CommandsSettings
from edge.commands.verify import CommandRejected, Verifier
from edge.errors import CommandError
from edge.trust import store_for_keys
from tests._face_helpers import template


def staff_args(subject="S-9", faces=("obama_1", "obama_3"), **extra) -> dict:
    raw = [template(f) for f in faces]
    return {"subject_id": subject, "templates": [base64.b64encode(t).decode() for t in raw],
            "template_count": len(raw), "sha256": templates_sha256(raw), "reason": "new officer, central down",
            **extra}


def test_the_check_refuses_what_could_not_be_enrolled_and_names_it():
    good = staff_args(valid_until="2030-01-01T00:00:00Z")
    nan = base64.b64encode(np.full(128, np.nan, "<f4").tobytes()).decode()
    for name, args, problem in (
            ("enrol_staff", good, "biometrics has no command 'enrol_staff'; it has: enroll_staff"),
            (COMMAND, {**good, "sha256": "0" * 64}, "is not the hash of these templates"),
            (COMMAND, {**good, "templates": ["not base64!"], "template_count": 1}, "templates.0: not base64"),
            (COMMAND, {**good, "templates": [nan], "template_count": 1}, "contains NaN or infinity"),
            (COMMAND, {**good, "template_count": 3}, "template_count is 3 but 2 templates came"),
            (COMMAND, {**good, "valid_from": "2031-01-01T00:00:00Z"}, "valid_until is not after valid_from"),
            (COMMAND, {**good, "valid_until": "2030-01-01T00:00"}, "valid_until: Input should have timezone"),
            (COMMAND, {**good, "role": "visitor"}, "role: unknown argument"),
            (COMMAND, {**good, "reason": "x"}, "reason: String should have at least 3 characters")):
        with pytest.raises(CommandError) as info:
            check(name, args)
        assert problem in str(info.value), (args, str(info.value))
    subject, digest = check(COMMAND, good)  # positive control
    assert (subject.subject_id, subject.role, len(subject.templates)) == ("S-9", "staff", 2)
    assert digest == good["sha256"] and subject.valid_until is not None


@pytest.fixture
def verifier(tmp_path):
    return Verifier(device="dev-1", site="site-1", trust=store_for_keys({}), clock_skew_s=60,
                    settings=CommandsSettings(allow_single_person_override=True), targets={TARGET: EFFECTS},
                    seen=SeenIds(tmp_path), checks={TARGET: check})


def test_one_operator_is_held_the_second_sees_no_template_and_approves(verifier):
    request = {"target": TARGET, "name": COMMAND, "args": staff_args(), "reason": "new officer"}
    with pytest.raises(CommandRejected) as held:
        verifier.local(request, "alice")
    assert held.value.reason == "under_signed" and "edge cmd approve approve-" in held.value.detail
    [waiting] = verifier.approvals.listing()
    assert waiting["args"]["templates"] == "[redacted]" and waiting["args"]["template_count"] == 2
    assert waiting["args"]["subject_id"] == "S-9" and waiting["args"]["sha256"] == request["args"]["sha256"]
    with pytest.raises(CommandRejected, match="second operator"):
        verifier.local({"approve": waiting["approval_id"]}, "alice")
    with pytest.raises(CommandRejected, match="not a single passage"):  # the site's one-person override
        verifier.local({**request, "single_person": True}, "alice")
    done = verifier.local({"approve": waiting["approval_id"]}, "bob")
    assert (done.operator, done.approved_by, done.effect) == ("alice", "bob", "barrier")


def _component(tmp_path):
    registered = {}
    router = SimpleNamespace(register_target=lambda name, submit, effects, check: registered.update(
        {name: (submit, effects, check)}))
    component = StaffEnrolment(SimpleNamespace(settings=SimpleNamespace(state_dir=tmp_path)), router)
    assert registered[TARGET][1:] == (EFFECTS, check)
    return component, registered[TARGET][0]


def _accepted(origin="local", operator="alice", approved_by="bob", reason="new officer"):
    return SimpleNamespace(origin=origin, operator=operator, approved_by=approved_by,
                           command=SimpleNamespace(reason=reason))


def test_the_component_writes_only_what_two_local_operators_agreed_on(tmp_path):
    component, submit = _component(tmp_path)
    try:
        for accepted, problem in ((_accepted(origin="mqtt", operator=None), "two gallery keys"),
                                  (_accepted(approved_by=None), "second operator"),
                                  (_accepted(approved_by="alice"), "second operator")):
            with pytest.raises(CommandError, match=problem):
                submit(COMMAND, staff_args(), accepted).result(10)
        assert not (tmp_path / "biometrics" / "gallery.db").exists()
        result = submit(COMMAND, staff_args(), _accepted()).result(10)  # positive control
    finally:
        component.stop()
    with pytest.raises(CommandError, match="stopping"):  # after stop: refused, never lost in a dead pool
        submit(COMMAND, staff_args(), _accepted()).result(10)
    assert (result["operator"], result["approved_by"], result["templates"]) == ("alice", "bob", 2)
    g = Gallery(tmp_path)
    try:
        assert [(s.subject_id, s.role) for s in g.subjects()] == [("S-9", "staff")]
        [row] = g.unreported_enrollments()
        assert (row["operator"], row["approved_by"], row["reason"]) == ("alice", "bob", "new officer, central down")
        assert row["template_sha256"] == result["template_sha256"]
    finally:
        g.close()


def test_the_gallery_itself_refuses_a_staff_enrolment_by_one_person(tmp_path):
    g = Gallery(tmp_path)
    try:
        staff = Subject("S-9", "staff", [template("obama_1")])
        for second in (None, "alice"):
            with pytest.raises(GalleryError, match="needs a second operator"):
                g.enroll_local(staff, "alice", "new officer", approved_by=second)
        assert g.subjects() == []
        visitor = Subject("V-9", "visitor", [template("biden_1")], valid_until=4_000_000_000.0)
        g.enroll_local(visitor, "alice", "booked by phone")  # a visitor stays a one-person task
        assert [r["approved_by"] for r in g.unreported_enrollments()] == [None]
    finally:
        g.close()


def test_a_gallery_made_before_second_operators_were_recorded_is_upgraded(tmp_path):
    folder = tmp_path / "biometrics"
    folder.mkdir(mode=0o700)
    old = sqlite3.connect(folder / "gallery.db")
    old.execute("CREATE TABLE local_enrollments (subject_id TEXT PRIMARY KEY, role TEXT NOT NULL, operator TEXT "
                "NOT NULL, reason TEXT NOT NULL, template_sha256 TEXT NOT NULL, enrolled_at REAL NOT NULL, state "
                "TEXT NOT NULL DEFAULT 'pending', reported INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO local_enrollments (subject_id, role, operator, reason, template_sha256, enrolled_at) "
                "VALUES ('V-1', 'visitor', 'alice', 'booked', 'ab', 1.0)")
    old.commit()
    old.close()
    g = Gallery(tmp_path)
    try:
        assert g.unreported_enrollments() == [{"subject_id": "V-1", "role": "visitor", "operator": "alice",
                                               "approved_by": None, "reason": "booked", "template_sha256": "ab",
                                               "enrolled_at": 1.0}]
    finally:
        g.close()
