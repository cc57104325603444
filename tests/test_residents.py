"""Resident login pieces without a daemon: the directory's checks and the wrong-PIN guard."""

from __future__ import annotations

import json

import pytest

from edge import signing
from edge.uptime import Clocks
from services.residents.directory import DirectoryRefused, make_verifier, parse_directory
from services.residents.guard import LoginGuard
from services.residents.settings import ResidentSettings
from tests._messaging_helpers import DEVICE, RESIDENT, SITE, Central


def test_a_verifier_matches_its_pin_only_and_salts_differ():
    a, b = make_verifier("4821"), make_verifier("4821")
    assert a["salt"] != b["salt"] and a["hash"] != b["hash"]  # per-resident salt
    from services.residents.directory import PinVerifier

    v = PinVerifier.model_validate(a)
    assert v.matches("4821") and not v.matches("4822") and "4821" not in json.dumps(a)


def test_directory_refused_when_forged_for_another_tablet_or_too_cheap(tmp_path):
    central = Central(tmp_path)
    trusted = signing.load_public_keys([central.pub])
    assert parse_directory(central.directory(seal=False), trusted, SITE, DEVICE).residents[0].pseudonym == RESIDENT
    with pytest.raises(DirectoryRefused, match="addressed to device"):
        parse_directory(central.directory(device="tab-9", seal=False), trusted, SITE, DEVICE)
    forged = json.loads(central.directory(seal=False))
    forged["residents"][0]["status"] = "active"
    forged["residents"].append({**forged["residents"][0], "pseudonym": "res-intruder"})
    with pytest.raises(DirectoryRefused, match="bad signature"):
        parse_directory(json.dumps(forged).encode(), trusted, SITE, DEVICE)
    cheap = json.loads(central.directory(seal=False))
    cheap.pop("signatures")
    cheap["residents"][0]["verifier"]["n"] = 1024
    with pytest.raises(DirectoryRefused, match="verifier.n: must be a power of two"):
        parse_directory(json.dumps(signing.sign(cheap, central.key)).encode(), trusted, SITE, DEVICE)


def _fake_clocks(t: dict) -> Clocks:
    return Clocks(now=lambda: t["wall"], uptime=lambda: t["up"])


def test_guard_backs_off_per_name_and_per_tablet_and_locks_out(tmp_path):
    s = ResidentSettings(backoff_base_s=1, backoff_max_s=8, max_failures=4, lockout_s=100, tablet_free_failures=2)
    t = {"wall": 0.0, "up": 500.0}
    clocks = _fake_clocks(t)

    def at(wall: float) -> LoginGuard:  # real time passes: both clocks move together
        t["up"] += wall - t["wall"]
        t["wall"] = wall
        return guard

    guard = LoginGuard(s, tmp_path / "logins.json", tmp_path, clocks=clocks)
    a, b, c = guard.key("res-a"), guard.key("res-b"), guard.key("res-c")
    assert guard.verdict(a).wait_s == 0
    at(10).failure(a)
    assert guard.verdict(a).wait_s == 1 and guard.verdict(b).wait_s == 0  # per name
    at(11).failure(a)
    assert guard.verdict(a).wait_s == 2
    guard.failure(b)  # the tablet's third failure: everyone waits now
    assert guard.verdict(c).wait_s == 1
    assert at(20).failure(a) == (3, None)
    assert at(40).failure(a) == (4, 140)
    again = LoginGuard(s, tmp_path / "logins.json", tmp_path, clocks=clocks)  # a restart
    guard = again
    assert at(50).verdict(a).locked and again.verdict(a).wait_s == 90
    again.forget(a)
    assert not again.verdict(a).locked


def test_guard_waits_end_only_when_both_clocks_agree(tmp_path):
    """A wall clock pushed forward lifts no lockout, back-off or tablet back-off; uptime alone neither."""
    s = ResidentSettings(backoff_base_s=1, backoff_max_s=8, max_failures=3, lockout_s=100, tablet_free_failures=1,
                         tablet_reset_s=50)
    t = {"wall": 1000.0, "up": 7.0}
    guard = LoginGuard(s, tmp_path / "logins.json", tmp_path, clocks=_fake_clocks(t))
    a, b = guard.key("res-a"), guard.key("res-b")
    for _ in range(3):
        guard.failure(a)
    t["wall"] += 86400  # rogue NTP: a day ahead; a second later by uptime
    t["up"] += 1
    verdict = guard.verdict(a)
    assert verdict.locked and verdict.wait_s == 99
    assert guard.verdict(b).wait_s > 0  # the tablet's back-off holds too (its quiet time has not passed)
    t["up"] += 99  # and now the real time has passed as well
    assert guard.verdict(a).wait_s == 0
    # The other way round: uptime passing while the wall clock stands still (set back) is not enough.
    for _ in range(3):
        guard.failure(b)
    t["up"] += 500
    assert guard.verdict(b).locked


def test_guard_counts_from_before_the_uptime_bound_or_with_a_lost_uptime_stay_bounded(tmp_path):
    s = ResidentSettings(lockout_s=100, max_failures=3)
    t = {"wall": 1000.0, "up": 10.0}
    guard = LoginGuard(s, tmp_path / "logins.json", tmp_path, clocks=_fake_clocks(t))
    key = guard.key("res-a")
    (tmp_path / "logins.json").write_text(json.dumps({"names": {key: [3, 990.0, 1090.0]}, "tablet": [3, 990.0]}))
    old = LoginGuard(s, tmp_path / "logins.json", tmp_path, clocks=_fake_clocks(t))
    assert old.verdict(key).wait_s == 90  # an old file: its lockout is taken as the wall clock says
    # A persisted uptime lost (commands.db replaced): a lockout kept at uptime 10**7 is held at most lockout_s.
    (tmp_path / "logins.json").write_text(json.dumps({"names": {key: [3, 990.0, 1090.0, 10**7, 10**7 + 100]},
                                                      "tablet": [0, 0.0, 0.0]}))
    lost = LoginGuard(s, tmp_path / "logins.json", tmp_path, clocks=_fake_clocks(t))
    assert lost.verdict(key).wait_s == 100
    t["wall"] += 100
    t["up"] += 100
    assert lost.verdict(key).wait_s == 0


def test_only_one_pin_check_at_a_time(tmp_path):
    guard = LoginGuard(ResidentSettings(), tmp_path / "logins.json", tmp_path)
    assert guard.begin() and not guard.begin()
    guard.end()
    assert guard.begin()


def _as(token: str):
    from edge.localapi.server import Request

    return Request("GET", "/v1/session", {}, {"Authorization": f"Bearer {token}"}, b"")


def _alive(sessions, token: str) -> bool:
    from edge.localapi.server import ApiError

    try:
        sessions.current(_as(token))
        return True
    except ApiError:
        return False


def test_a_residents_logins_end_only_their_own_sessions_and_a_full_tablet_refuses():
    from edge.localapi.server import ApiError
    from services.residents.sessions import Sessions

    now = [0.0]
    sessions = Sessions(600, 120, clock=lambda: now[0], per_resident=2, max_total=4)
    victim = sessions.create("res-victim")
    spam = []
    for _ in range(50):  # the old global LRU: 64 logins of one resident logged everyone out
        now[0] += 1
        spam.append(sessions.create("res-spammer"))
    assert _alive(sessions, victim)
    assert [_alive(sessions, t) for t in spam[-3:]] == [False, True, True]  # their own oldest went
    assert sessions.count() == 3
    third = sessions.create("res-third")  # the tablet's last slot
    now[0] += 1
    with pytest.raises(ApiError) as full:
        sessions.create("res-fourth")
    assert (full.value.status, full.value.code) == (503, "sessions_full")
    assert "max_sessions" in full.value.message and 1 <= int(full.value.headers["Retry-After"]) <= 600
    assert all(_alive(sessions, t) for t in (victim, third, *spam[-2:]))  # nobody was logged out
    # A resident with a session of their own still logs in on a full tablet: it replaces their oldest.
    again = sessions.create("res-third")
    assert _alive(sessions, again) and not _alive(sessions, third) and sessions.count() == 4
    # Positive control: a logout, or an idle timeout, frees a slot for someone new.
    assert sessions.end(_as(victim))
    assert _alive(sessions, sessions.create("res-fourth"))
    now[0] += 601
    assert sessions.count() == 0 and _alive(sessions, sessions.create("res-fifth"))


def test_session_bounds_are_checked():
    with pytest.raises(ValueError, match="max_sessions_per_resident .* must not be above max_sessions"):
        ResidentSettings(max_sessions_per_resident=8, max_sessions=4)
