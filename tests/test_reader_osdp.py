"""``reader.osdp`` against libosdp's own peripheral device (PD) on a pty: a second implementation."""

from __future__ import annotations

import hashlib
import os

import osdp
import pytest

from drivers.readers import cards
from drivers.readers.config import OsdpReaderConfig, read_key
from tests._reader_helpers import KEY, ReaderLane, key_file

GREEN, RED, AMBER = osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Red, osdp.CommandLEDColor.Amber


@pytest.fixture
def lane(tmp_path):
    lane = ReaderLane(tmp_path).start()
    yield lane
    lane.stop()


def test_card_read_becomes_a_credential_over_the_secure_channel(lane):
    online = lane.wait("reader.online")[0]
    assert online["payload"] == {"address": 5, "secure": True}
    assert lane.sim.secure and lane.driver.health()["secure"]
    lane.sim.card(12, 3456)
    card = lane.wait("reader.card")[0]
    assert card["payload"] == {"address": 5, "reader_no": 0, "format": "h10301", "bits": 26,
                               "credential": "12:3456", "problem": None}


def test_a_misread_card_is_never_a_credential(lane):
    lane.wait("reader.online")
    data = bytearray(cards.encode_h10301(12, 3456))
    data[1] ^= 0x10  # one bit flipped on the wire: parity catches it
    lane.sim.raw_card(bytes(data), 26)
    card = lane.wait("reader.card")[0]["payload"]
    assert card["credential"] is None and "parity" in card["problem"]


def test_grant_feedback_lights_the_reader_green(lane):
    lane.wait("reader.online")
    result = lane.driver.handle("feedback", {"outcome": "grant"})
    assert result["outcome"] == "grant"
    led = [c for c in lane.pd_commands(2) if c["command"] == osdp.Command.LED]
    assert led and led[0]["on_color"] == GREEN and led[0]["temporary"] is True


def test_deny_feedback_is_red_with_a_beep(lane):
    lane.wait("reader.online")
    lane.driver.handle("feedback", {"outcome": "deny"})
    got = {c["command"]: c for c in lane.pd_commands(2)}
    assert got[osdp.Command.LED]["on_color"] == RED
    assert got[osdp.Command.Buzzer]["rep_count"] == 2


def test_hold_feedback_flashes_amber(lane):
    lane.wait("reader.online")
    lane.driver.handle("feedback", {"outcome": "hold"})
    led = [c for c in lane.pd_commands(2) if c["command"] == osdp.Command.LED][0]
    assert led["on_color"] == AMBER and led["off_color"] == osdp.CommandLEDColor.Black


def test_tamper_and_power_are_alarms_once_per_change(lane):
    lane.wait("reader.online")
    lane.sim.local_status(tamper=True)
    tamper = lane.wait("reader.tamper")[0]
    assert tamper["priority"] == "alarm" and tamper["payload"]["active"] is True
    lane.sim.local_status(tamper=True, power_failed=True)
    power = lane.wait("reader.power")[0]
    assert power["priority"] == "alarm" and power["payload"]["failed"] is True
    assert len(lane.of("reader.tamper")) == 1  # unchanged: no second alarm
    assert lane.driver.health()["status"] == "degraded"
    lane.sim.local_status(tamper=False)
    lane.wait("reader.tamper", active=False)


def test_pin_is_checked_in_the_driver_and_never_leaves_it(lane):
    lane.wait("reader.online")
    lane.sim.keys("4711#")
    entered = lane.wait("reader.pin_entered")[0]
    assert entered["payload"]["digits"] == 4
    salt = os.urandom(16)
    right = hashlib.pbkdf2_hmac("sha256", b"4711", salt, 10_000)
    wrong = hashlib.pbkdf2_hmac("sha256", b"4712", salt, 10_000)
    assert lane.driver.handle("check_pin", {"salt": salt.hex(), "hash": wrong.hex(),
                                            "iterations": 10_000})["match"] is False
    lane.sim.keys("4711#")
    lane.wait("reader.pin_entered", count=2)
    assert lane.driver.handle("check_pin", {"salt": salt.hex(), "hash": right.hex(),
                                            "iterations": 10_000})["match"] is True
    # checked once, then forgotten: a replayed check finds nothing
    assert lane.driver.handle("check_pin", {"salt": salt.hex(), "hash": right.hex(),
                                            "iterations": 10_000})["match"] is False
    assert "4711" not in repr(lane.events)


def test_wrong_secure_channel_key_is_refused(tmp_path):
    lane = ReaderLane(tmp_path, pd_key=bytes(16)).start()
    try:
        alarm = lane.wait("reader.secure_channel_failed")[0]
        assert alarm["priority"] == "alarm"
        lane.sim.card(12, 3456)
        with pytest.raises(AssertionError):
            lane.wait("reader.card", timeout=1.5)
        assert not lane.of("reader.online") and not lane.sim.secure
        with pytest.raises(Exception, match="offline"):
            lane.driver.handle("feedback", {"outcome": "grant"})
    finally:
        lane.stop()


def test_install_mode_hands_the_reader_its_own_key(tmp_path):
    lane = ReaderLane(tmp_path, pd_key=None, pd_install_mode=True, install_mode=True).start()
    try:
        lane.wait("reader.online")
        keyset = [c for c in lane.pd_commands(3) if c["command"] == osdp.Command.Keyset]
        assert keyset and keyset[0]["data"] == KEY
    finally:
        lane.stop()


def test_unplugged_reader_goes_offline_and_commands_fail(lane):
    lane.wait("reader.online")
    lane.sim.unplug()
    offline = lane.wait("reader.offline")[0]
    assert offline["priority"] == "alarm"  # a cut cable is not a quiet event
    assert "port" in offline["payload"]["reason"] or "answering" in offline["payload"]["reason"]
    with pytest.raises(Exception, match="offline"):
        lane.driver.handle("feedback", {"outcome": "deny"})


def test_config_needs_a_private_key_file(tmp_path):
    with pytest.raises(ValueError, match="key_file is required"):
        OsdpReaderConfig(name="r", kind="reader.osdp", port="/dev/null")
    loose = key_file(tmp_path, mode=0o644)
    with pytest.raises(ValueError, match="group or others"):
        read_key(loose)
    short = tmp_path / "short.key"
    short.write_text("abcd")
    short.chmod(0o600)
    with pytest.raises(ValueError, match="16-byte"):
        read_key(short)
    assert read_key(key_file(tmp_path)) == KEY


def test_h10301_round_trip_and_other_formats():
    assert cards.h10301(cards.encode_h10301(255, 65535)).credential == "255:65535"
    assert cards.decode("wiegand", b"\xab\xcd\xef\x01\x80", 35).credential == "raw35:abcdef0180"
    assert cards.decode("ascii", b"VIS-2041", None).credential == "VIS-2041"
    assert cards.decode("wiegand", b"\x01", 26).credential is None
    assert cards.decode("raw", b"BK-42", 40).credential == "raw40:424b2d3432"  # a card's raw bits
    assert cards.decode("raw", b"BK-42", 40, raw_as_text=True).credential == "BK-42"  # a QR reader's code
    assert cards.decode("raw", b"BK\x07", 24, raw_as_text=True).credential is None


def test_qr_reader_code_over_osdp(tmp_path):
    lane = ReaderLane(tmp_path, raw_as_text=True).start()
    try:
        lane.wait("reader.online")
        lane.sim.code("BK-42")
        card = lane.wait("reader.card")[0]["payload"]
        assert (card["format"], card["credential"]) == ("ascii", "BK-42")
    finally:
        lane.stop()


def test_a_reader_plugged_back_in_comes_online_again(tmp_path):
    from drivers.sim.osdp_pd import OsdpReaderSim

    lane = ReaderLane(tmp_path).start()
    try:
        lane.wait("reader.online")
        lane.sim.stop()  # cable pulled
        lane.wait("reader.offline")
        lane.sim = OsdpReaderSim(lane.path, address=5, key=KEY).start()  # a reader on the same port again
        lane.wait("reader.online", count=2, timeout=15)
        lane.sim.card(1, 2)
        assert lane.wait("reader.card")[0]["payload"]["credential"] == "1:2"
    finally:
        lane.stop()


def test_keypad_takes_only_ascii_digits_one_event_per_key():
    from drivers.readers._pin import PinPad

    pad = PinPad("#", max_digits=6, key_timeout_s=10, ttl_s=30)
    salt = b"s" * 16
    for i, key in enumerate([b"1", b"\xb2", b"2", b"\xb9", b"3", b"4", b"#"]):  # latin-1 "²" and "¹" are no keys
        done = pad.keys(key, now=float(i))
    assert done == 4
    assert pad.check(salt, hashlib.pbkdf2_hmac("sha256", b"1234", salt, 10_000), 10_000, now=7.0)[0]
    assert pad.keys(b"9" * 100 + b"#", now=8.0) == 6  # a flood of keys keeps max_digits, no more


def test_a_card_read_flood_is_refused_over_the_limit_and_reported_once(tmp_path):
    """libosdp's PD presents reads as fast as it is polled: the first ``burst`` become cards, the
    rest (bar the rate's trickle) are refused, counted in one flood report, never a credential."""
    lane = ReaderLane(tmp_path, rate=1.0, burst=3, flood_report_s=1.0).start()
    try:
        lane.wait("reader.online")
        for i in range(30):
            lane.sim.card(7, 9000 + i)
        started = lane.wait("reader.flood", state="started")[0]
        assert started["priority"] == "alarm" and started["payload"]["suppressed"] == 1
        assert (started["payload"]["rate"], started["payload"]["burst"]) == (1.0, 3)
        health = lane.driver.health()
        assert health["flooding"] and (health["status"], health["external"]) == ("degraded", True)
        from edge.update.health import problems

        class Trial:  # a daemon in a release's trial as edge.update.health reads it: a flood rolls nothing back
            def __init__(self, reader: dict):
                self.store, self.components = object(), []
                self.supervisor = type("Supervisor", (), {"health": lambda _self: {"reader1": reader}})()
        assert problems(Trial(health)) == []
        own_fault = problems(Trial({**health, "external": False}))  # degraded by the driver itself: counted
        assert own_fault and "reader1 is degraded" in own_fault[0]
        ended = lane.wait("reader.flood", state="ended", timeout=20)[0]
        floods = lane.of("reader.flood")
        assert [f["priority"] for f in floods] == ["alarm"] + ["normal"] * (len(floods) - 1)
        total, cards = ended["payload"]["total"], len(lane.of("reader.card"))
        assert cards + total == 30 and sum(f["payload"]["suppressed"] for f in floods) == total
        assert 3 <= cards <= 3 + ended["payload"]["duration_s"] * 1.0 + 1, (cards, ended)
        health = lane.driver.health()
        assert (health["cards_refused"], health["flooding"], health["status"]) == (total, False, "ok")
        lane.sim.card(12, 3456)  # positive control: at a person's pace the next read is a card again
        assert lane.wait("reader.card", credential="12:3456")[0]["payload"]["format"] == "h10301"
    finally:
        lane.stop()


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("rate", 0, "greater than or equal to 0.2"), ("rate", 1e-9, "greater than or equal to 0.2"),
    ("rate", 50, "less than or equal to 20"),
    ("burst", 0, "greater than or equal to 1"), ("flood_report_s", 0.5, "greater than or equal to 1")])
def test_the_card_read_limit_is_checked(tmp_path, option, value, problem):
    base = {"name": "r", "kind": "reader.osdp", "port": "/dev/null", "key_file": key_file(tmp_path)}
    with pytest.raises(ValueError, match=problem) as info:
        OsdpReaderConfig(**base, **{option: value})
    assert option in str(info.value)
    defaults = OsdpReaderConfig(**base)  # positive control: safe for a real lane without setting anything
    assert (defaults.rate, defaults.burst, defaults.flood_report_s) == (1.0, 5, 60.0)


def test_central_may_tune_the_limit_within_its_bounds(tmp_path):
    """drivers.NAME.rate and .burst are on the remote-config allowlist; the merged config passes
    the same checks as the local file, so a signed document cannot set a limit of 0."""
    from datetime import UTC, datetime

    from edge.update import remote_config as rc

    local = {"drivers": [{"name": "reader-in", "kind": "reader.osdp", "port": "/dev/null",
                          "key_file": str(key_file(tmp_path))}]}

    def document(**changes):
        now = datetime.now(UTC)
        return rc.ConfigDocument(type="config", site="s", version=1, issued_at=now, expires_at=now, signatures=[],
                                 settings={f"drivers.reader-in.{k}": v for k, v in changes.items()})

    tuned = document(rate=0.5, burst=2)
    rc.check_allowed(tuned)
    config = OsdpReaderConfig(**rc.merge(local, tuned.settings)["drivers"][0])
    assert (config.rate, config.burst) == (0.5, 2)
    with pytest.raises(ValueError, match="burst"):
        OsdpReaderConfig(**rc.merge(local, document(burst=0).settings)["drivers"][0])
    with pytest.raises(ValueError, match="rate"):  # one config key cannot shut the site's card lanes
        OsdpReaderConfig(**rc.merge(local, document(rate=1e-9, burst=1).settings)["drivers"][0])
    with pytest.raises(rc.ConfigRefused, match="flood_report_s"):  # local only
        rc.check_allowed(document(flood_report_s=5))
