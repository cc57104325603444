"""Red team: one operator swaps an enrolled person's face through a visitor enrolment.

A local visitor enrolment is a one-person task. It used to replace whatever subject had
that id: one officer could put an accomplice's face under a booked visitor whom central
enrolled, or turn a member of staff into a visitor. Now it never replaces central's
subject or a staff face; the positive control: an operator redoes their own visitor
enrolment (a bad photo at reception), and a new subject id enrols at once.
"""

from __future__ import annotations

import json

from drivers.camera.gallery import Gallery, Subject
from tests._face_helpers import photo, template

UNTIL = "2099-01-01T00:00Z"


def test_a_visitor_enrolment_never_replaces_central_or_staff_faces(biometrics_cli, tmp_path):
    g = Gallery(tmp_path / "state")
    g.upsert(Subject("V-booked", "visitor", [template("obama_1")], valid_until=4_000_000_000.0), source="central")
    g.upsert(Subject("S-1", "staff", [template("biden_1")]), source="central")
    g.close()
    for subject in ("V-booked", "S-1"):
        r = biometrics_cli("enroll", "--reason", "accomplice", "--subject", subject, "--role", "visitor",
                           "--valid-until", UNTIL, str(photo("rose_leslie_2")), "--json")
        out = json.loads(r.stdout)
        assert r.returncode == 1 and not out["ok"] and "never replaces it" in out["error"], r.stdout
    r = biometrics_cli("verify", "--subject", "V-booked", str(photo("obama_2")), "--json")
    assert json.loads(r.stdout)["results"][0]["decision"] == "biometric.verified"  # the booked face is still there

    # Positive control: one's own local visitor may be redone; a new id enrols at once.
    for photo_name in ("rose_leslie_1", "rose_leslie_2"):
        r = biometrics_cli("enroll", "--reason", "reception", "--subject", "V-new", "--role", "visitor",
                           "--valid-until", UNTIL, str(photo(photo_name)), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout
