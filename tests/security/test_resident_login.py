"""Issue 17 acceptance, part 1: a resident reads only their own mail (attacks on the real daemon).

The attacker is a cellmate at the same tablet: they can run the UI (the local API
socket), guess pseudonyms and PINs, and restart the tablet.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from edge.localapi.client import call, call_json
from edge.testing.wait import wait_for
from tests._messaging_helpers import (
    DEVICE,
    DIRECTORY_TOPIC,
    OTHER,
    PINS,
    RESIDENT,
    SITE,
    Central,
    topic,
)
from tests.test_messaging_daemon import Tablet, _config

MAILBOX_ROUTES = [("GET", "/v1/messaging/contacts"), ("GET", "/v1/messaging/messages"),
                  ("POST", "/v1/messaging/messages"), ("GET", "/v1/messaging/messages/{id}"),
                  ("POST", "/v1/messaging/messages/{id}/read"), ("GET", "/v1/messaging/attachments/{id}")]


@pytest.fixture
def central(tmp_path):
    return Central(tmp_path)


@pytest.fixture
def publisher(mosquitto):
    from services.learning._link import StandaloneLink

    link = StandaloneLink(mosquitto.uri, client_id="central").start()
    yield link
    link.stop()


def _tablet(edge_daemon, mosquitto, central, publisher, directory=None, **residents) -> Tablet:
    config = _config(mosquitto, central)
    config["residents"] = {"min_answer_s": 0.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **residents}
    daemon = edge_daemon(config, start=False)
    central.provision(daemon)
    publisher.publish(topic("contacts"), central.contacts(), retain=True)
    publisher.publish(DIRECTORY_TOPIC, directory(central) if directory else central.directory(), retain=True)
    tablet = Tablet(daemon.start())
    wait_for(tablet.ready, what="directory and contacts applied", timeout=45)
    central.learn_device_key(mosquitto)
    return tablet


def _login(tablet: Tablet, pseudonym: str, pin: str):
    return call(tablet.sock, "POST", "/v1/session", {"pseudonym": pseudonym, "pin": pin})


def _inbound(tablet, central, publisher, body, **kw) -> str:
    msg_id, doc = central.inbound(body, **kw)
    publisher.publish(topic("in"), doc)
    wait_for(lambda: msg_id in {m["id"] for m in tablet.api("GET", "/v1/messaging/messages",
                                                             resident=kw.get("resident", RESIDENT))[1]["messages"]},
               what="inbound stored", timeout=45)
    return msg_id


def test_cellmate_without_the_pin_reads_nothing(mosquitto, edge_daemon, central, publisher):
    tablet = _tablet(edge_daemon, mosquitto, central, publisher, max_failures=50, tablet_free_failures=50)
    from tests.conftest import FACES

    photo = (FACES / "alex_lacamoire_1.jpg").read_bytes()
    msg_id = _inbound(tablet, central, publisher, "Your visit is on Tuesday", attachments=[("image/jpeg", photo)])
    att_id = tablet.message(msg_id)["attachments"][0]["id"]
    # Positive control: the resident, logged in with their PIN, reads their mail.
    assert tablet.message(msg_id)["body"] == "Your visit is on Tuesday"

    def as_cellmate(headers):
        return [call_json(tablet.sock, m, u.format(id=att_id if "attach" in u else msg_id),
                          {"contact": "c-mum", "body": "in your name"}, headers=headers)
                for m, u in MAILBOX_ROUTES]

    # No login; yesterday's header naming the victim; a made-up token: all 401, nothing read.
    for headers in ({}, {"X-Resident": RESIDENT}, {"Authorization": "Bearer " + "A" * 43},
                    {"Authorization": "Basic " + RESIDENT}):
        answers = as_cellmate(headers)
        assert [a[0] for a in answers] == [401] * len(MAILBOX_ROUTES), (headers, answers)
        assert "Tuesday" not in repr(answers)
    # Guessing the victim's PIN: refused.
    assert _login(tablet, RESIDENT, "000000")[0] == 401
    # Logged in as themselves, the cellmate sees only their own mailbox.
    answers = [a for a in as_cellmate(tablet.headers(OTHER)) if a[0] == 200]
    assert "Tuesday" not in repr(answers) and msg_id not in repr(answers)
    assert tablet.api("GET", f"/v1/messaging/messages/{msg_id}", resident=OTHER)[0] == 404
    assert tablet.api("GET", f"/v1/messaging/attachments/{att_id}", resident=OTHER)[0] == 404
    assert tablet.api("POST", f"/v1/messaging/messages/{msg_id}/read", resident=OTHER)[0] == 404
    assert tablet.message(msg_id)["read_at"] is None  # no false read receipt either
    # Learning: the victim's assignments and learning record are theirs too.
    theirs = f"/v1/learning/assignments?resident={RESIDENT}"
    assert call_json(tablet.sock, "GET", theirs)[0] == 401
    assert tablet.api("GET", theirs, resident=OTHER)[0] == 403
    statement = {"actor": {"account": {"homePage": "https://c.example", "name": RESIDENT}},
                 "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"}, "object": {"id": "urn:edge:course:x"}}
    assert call_json(tablet.sock, "POST", "/v1/learning/statements", statement)[0] == 401
    assert tablet.api("POST", "/v1/learning/statements", statement, resident=OTHER)[0] == 403
    assert tablet.api("POST", "/v1/learning/statements", statement, resident=RESIDENT)[0] == 201
    # Logging out ends the victim's token for whoever picks the tablet up next.
    victim = tablet.headers(RESIDENT)
    assert call_json(tablet.sock, "DELETE", "/v1/session", headers=victim) == (200, {"ended": True})
    assert call_json(tablet.sock, "GET", "/v1/messaging/messages", headers=victim)[0] == 401


def test_wrong_pin_answers_are_identical_for_existing_and_unknown_pseudonyms(
        mosquitto, edge_daemon, central, publisher):
    suspended = "res-susp3nd"
    def directory(central):
        return central.directory(residents={RESIDENT: (PINS[RESIDENT], "active"), OTHER: (PINS[OTHER], "active"),
                                            suspended: ("111111", "suspended")})
    # min_answer_s = 0: the decoy check alone must make the times alike, without padding.
    tablet = _tablet(edge_daemon, mosquitto, central, publisher, directory=directory,
                     max_failures=100, tablet_free_failures=100)
    tries = {RESIDENT: "999999", "res-n0b0dy": "999999", suspended: "111111"}  # the suspended one's right PIN
    answers: dict[str, list] = {name: [] for name in tries}
    times: dict[str, list[float]] = {name: [] for name in tries}
    for _ in range(7):
        for name, pin in tries.items():
            wait_for(lambda n=name, p=pin: _timed(tablet, n, p, answers, times), what="an answer, not a back-off", timeout=45)
    for name in tries:
        statuses = {a[0] for a in answers[name]}
        bodies = {a[2] for a in answers[name]}
        headers = {tuple(sorted((k, v) for k, v in a[1].items() if k != "Date")) for a in answers[name]}
        assert statuses == {401} and len(bodies) == 1, (name, answers[name])
        answers[name] = (statuses, bodies, headers)
    assert answers[RESIDENT] == answers["res-n0b0dy"] == answers[suspended]
    medians = {name: statistics.median(t) for name, t in times.items()}
    assert max(medians.values()) < 1.6 * min(medians.values()), medians
    # A 10 000-deep JSON body is a clear 400 from the real daemon, not a dropped connection.
    status, _, raw = call(tablet.sock, "POST", "/v1/session", b"[" * 10_000 + b"]" * 10_000)
    assert status == 400 and json.loads(raw)["error"]["code"] == "too_deep"
    # Positive control: the right PIN logs in.
    assert _login(tablet, RESIDENT, PINS[RESIDENT])[0] == 201
    assert "Traceback" not in tablet.daemon.log_tail(10**7)


def _timed(tablet, name, pin, answers, times) -> bool:
    started = time.perf_counter()
    got = _login(tablet, name, pin)
    if got[0] == 429:
        return False
    times[name].append(time.perf_counter() - started)
    answers[name].append(got)
    return True


def test_lockout_after_n_wrong_pins_survives_a_restart(mosquitto, edge_daemon, mqtt_collector, central, publisher):
    tablet = _tablet(edge_daemon, mosquitto, central, publisher, max_failures=3, lockout_s=600,
                     tablet_free_failures=50)
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    for name in (RESIDENT, "res-n0b0dy"):
        for n in range(3):
            wait_for(lambda nm=name: _login(tablet, nm, "000000")[0] == 401, what=f"wrong PIN {n + 1}", timeout=45)
    # Locked out: even the right PIN is not checked, and known and unknown names look alike.
    locked = [_login(tablet, RESIDENT, PINS[RESIDENT]), _login(tablet, "res-n0b0dy", "000000")]
    assert [a[0] for a in locked] == [429, 429] and locked[0][2] == locked[1][2]
    assert int(locked[0][1]["Retry-After"]) > 500
    events = collector.wait_for(lambda c: len(c.events("resident.lockout")) >= 2 and c.events("resident.lockout"),
                                what="two resident.lockout alarms", timeout=45)
    by_name = {e["payload"]["pseudonym"]: e for e in events}
    assert by_name[RESIDENT]["priority"] == "alarm" and by_name[RESIDENT]["payload"]["known"] is True
    assert by_name["res-n0b0dy"]["payload"]["known"] is False

    tablet.ready_as = OTHER
    tablet.daemon.kill()  # a power cut is no way out of a lockout
    tablet.daemon.start()
    wait_for(tablet.ready, what="daemon back", timeout=45)
    assert _login(tablet, RESIDENT, PINS[RESIDENT])[0] == 429
    assert tablet.daemon.restart() and wait_for(tablet.ready, what="daemon back again", timeout=45)
    assert _login(tablet, RESIDENT, PINS[RESIDENT])[0] == 429
    # Positive controls: another resident still logs in; central resetting the PIN ends the lockout.
    assert _login(tablet, OTHER, PINS[OTHER])[0] == 201
    publisher.publish(DIRECTORY_TOPIC, central.directory(2, {RESIDENT: ("246810", "active")}), retain=True)
    assert wait_for(lambda: _login(tablet, RESIDENT, "246810")[0] == 201, what="login after a PIN reset", timeout=45)
    state = tablet.daemon.state_dir / "residents"
    assert RESIDENT.encode() not in (state / "logins.json").read_bytes()  # names are kept hashed


def test_legal_mail_needs_a_fresh_pin(mosquitto, edge_daemon, central, publisher):
    tablet = _tablet(edge_daemon, mosquitto, central, publisher, fresh_pin_s=1.5)
    legal = _inbound(tablet, central, publisher, "Privileged: appeal strategy", contact="c-lawyer", privileged=True)
    family = _inbound(tablet, central, publisher, "See you Sunday")
    tablet.tokens.clear()
    assert tablet.message(legal)["body"] == "Privileged: appeal strategy"  # right after the PIN: fine
    wait_for(lambda: tablet.api("GET", "/v1/session")[1]["pin_fresh_for_s"] == 0, what="PIN no longer fresh", timeout=45)
    code, body = tablet.api("GET", f"/v1/messaging/messages/{legal}")
    assert code == 403 and body["error"]["code"] == "pin_required" and "appeal" not in repr(body)
    code, body = tablet.api("POST", "/v1/messaging/messages", {"contact": "c-lawyer", "body": "new evidence"})
    assert code == 403 and body["error"]["code"] == "pin_required"
    code, body = tablet.api("POST", f"/v1/messaging/messages/{legal}/read")  # would send the lawyer a receipt
    assert code == 403 and body["error"]["code"] == "pin_required"
    assert tablet.api("GET", f"/v1/messaging/messages/{family}")[0] == 200  # family mail needs no fresh PIN
    assert tablet.api("POST", f"/v1/messaging/messages/{family}/read")[1]["receipt_sent"] is True
    tablet.tokens.clear()  # the UI asks for the PIN again
    assert tablet.api("GET", f"/v1/messaging/messages/{legal}")[0] == 200
    assert tablet.api("POST", f"/v1/messaging/messages/{legal}/read")[1]["receipt_sent"] is True
    assert tablet.api("POST", "/v1/messaging/messages", {"contact": "c-lawyer", "body": "new evidence"})[0] == 201


def test_sessions_expire_when_idle_and_end_when_central_suspends_the_resident(
        mosquitto, edge_daemon, central, publisher):
    tablet = _tablet(edge_daemon, mosquitto, central, publisher, idle_timeout_s=1.0)
    headers = tablet.headers(RESIDENT)
    assert call_json(tablet.sock, "GET", "/v1/messaging/messages", headers=headers)[0] == 200
    time.sleep(1.5)  # idle means no request at all: polling would keep the session alive
    code, body = call_json(tablet.sock, "GET", "/v1/session", headers=headers)
    assert code == 401 and body["error"]["code"] == "session_expired"
    tablet.tokens.clear()
    assert tablet.api("GET", "/v1/messaging/messages", resident=OTHER)[0] == 200
    publisher.publish(DIRECTORY_TOPIC, central.directory(2, {RESIDENT: (PINS[RESIDENT], "active"),
                                                             OTHER: (PINS[OTHER], "released")}), retain=True)
    wait_for(lambda: tablet.api("GET", "/v1/messaging/messages", resident=OTHER)[0] == 401,
             what="released resident's session ended", timeout=45)
    assert _login(tablet, OTHER, PINS[OTHER])[0] == 401  # and they cannot log in again
    assert _login(tablet, RESIDENT, PINS[RESIDENT])[0] == 201


def test_one_resident_logging_in_again_and_again_logs_nobody_else_out(mosquitto, edge_daemon, central, publisher):
    """The table of sessions was one LRU of 64: 64 logins of one resident (or a script on the
    socket with one PIN) ended every other resident's session. Now a resident's logins end
    only their own; a tablet full of others' sessions refuses a login instead."""
    third, fourth = ("res-th1rd0", "111222"), ("res-f0urth", "333444")
    def directory(central):
        return central.directory(residents={RESIDENT: (PINS[RESIDENT], "active"), OTHER: (PINS[OTHER], "active"),
                                            third[0]: (third[1], "active"), fourth[0]: (fourth[1], "active")})
    tablet = _tablet(edge_daemon, mosquitto, central, publisher, directory=directory,
                     max_sessions_per_resident=1, max_sessions=3)  # one each: ready() logged RESIDENT in
    victim = tablet.headers(RESIDENT)
    spam = [_login(tablet, OTHER, PINS[OTHER]) for _ in range(6)]  # 3 times the tablet's whole bound
    assert [s[0] for s in spam] == [201] * 6
    assert call_json(tablet.sock, "GET", "/v1/messaging/messages", headers=victim)[0] == 200
    tokens = [json.loads(s[2])["token"] for s in spam]
    alive = [call_json(tablet.sock, "GET", "/v1/session", headers={"Authorization": f"Bearer {t}"})[0]
             for t in tokens]
    assert alive == [401] * 5 + [200]  # the spammer's own older sessions went
    assert _login(tablet, *third)[0] == 201  # the tablet's last slot
    status, headers, raw = _login(tablet, *fourth)
    assert status == 503 and json.loads(raw)["error"]["code"] == "sessions_full", raw
    assert int(headers["Retry-After"]) >= 1
    assert call_json(tablet.sock, "GET", "/v1/messaging/messages", headers=victim)[0] == 200  # still logged in
    # Positive control: once the victim logs out, the fourth resident logs in.
    assert call_json(tablet.sock, "DELETE", "/v1/session", headers=victim) == (200, {"ended": True})
    assert _login(tablet, *fourth)[0] == 201
