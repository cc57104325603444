"""Red team: a resident at the tablet lists who else is in the prison, and what they study.

The learning catalog is one signed document for the whole site, and its
``assignments`` name residents by pseudonym (a course assigned to ``r-8``).
``GET /v1/learning/catalog`` needs no session, so whoever runs the UI would
read every resident's pseudonym and assigned courses (a treatment programme
tells a lot): the enumeration the login's identical answers are there to
prevent. The catalog the UI gets names no resident; a resident's own
assignments come from ``GET /v1/learning/assignments?resident=`` with their
session (the positive control), device-wide ones without.
"""

from __future__ import annotations

from edge.localapi.client import call, call_json
from edge.testing.wait import wait_for
from tests._learning_helpers import CHUNK, central_key, make_folder, start_server
from tests.test_learning_daemon import DEVICE, _api, _config, _publish_directory, _status

ASSIGNMENTS = [{"course": "basics", "device": DEVICE},
               {"course": "maths", "resident": "r-7"},
               {"course": "recovery", "resident": "r-8"}]  # r-8 lives on another wing's tablet


def test_the_catalog_names_no_resident_and_each_sees_only_their_assignments(tmp_path, mosquitto, edge_daemon):
    key, pub, _ = central_key(tmp_path)
    folder = make_folder(tmp_path, {c: {"a.bin": CHUNK} for c in ("basics", "maths", "recovery")})
    server = start_server(mosquitto, folder, "site-1", key)
    try:
        server.publish_catalog(version=1, assignments=ASSIGNMENTS)
        daemon = edge_daemon(_config(mosquitto, pub), start=False)
        _publish_directory(server.link, key, daemon, {"r-7": "5150"})
        daemon.start()
        api = _api(daemon)
        wait_for(lambda: _status(daemon).get("catalog_version") == 1, what="the catalog applied", timeout=45)
        wait_for(lambda: "residents_directory_applied" in daemon.log_tail(10**7), what="directory applied",
                 timeout=45)

        # The attack: no session, just the UI socket.
        code, _, raw = call(api, "GET", "/v1/learning/catalog")
        assert code == 200
        assert b"r-8" not in raw and b"r-7" not in raw, raw[:2000]
        code, session = call_json(api, "POST", "/v1/session", {"pseudonym": "r-7", "pin": "5150"})
        assert code == 201, session
        bearer = {"Authorization": f"Bearer {session['token']}"}
        code, _, raw = call(api, "GET", "/v1/learning/catalog", headers=bearer)
        assert code == 200 and b"r-8" not in raw, raw[:2000]
        code, _ = call_json(api, "GET", "/v1/learning/assignments?resident=r-8", headers=bearer)
        assert code == 403

        # Positive control: the catalog still lists every course; r-7 gets their assignment with
        # their session, and device-wide assignments need none.
        code, catalog = call_json(api, "GET", "/v1/learning/catalog")
        assert sorted(c["id"] for c in catalog["courses"]) == ["basics", "maths", "recovery"]
        assert catalog["assignments"] == [{"course": "basics", "device": DEVICE, "resident": None}]
        code, mine = call_json(api, "GET", "/v1/learning/assignments?resident=r-7", headers=bearer)
        assert code == 200 and [(a["course"], a["resident"]) for a in mine["assignments"]] == \
            [("basics", None), ("maths", "r-7")], mine
        code, wide = call_json(api, "GET", "/v1/learning/assignments")
        assert code == 200 and [a["course"] for a in wide["assignments"]] == ["basics"], wide
    finally:
        server.stop()
        server.link.stop()
