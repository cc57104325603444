"""Dose ledger: rolling window, warning and limit at the right scan, restart, central reconciliation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from drivers.sim.xray import ScannerSim
from drivers.xray.scan import build_scan
from edge.cli import cli
from edge.signing import generate_keypair, load_private_key, load_public_keys, sign
from edge.testing.daemon import dump_toml
from services.xray.ledger import DoseLedger, window_start
from services.xray.rules import alarms
from services.xray.settings import XraySettings
from services.xray.totals import DoseRecordsRejected, apply, parse_verified

POLICY = XraySettings(limit_usv=10.0, warning_usv=8.0, allowed_reasons=["intelligence_led"])
NOW = datetime.now(UTC)


def _payload(sim: ScannerSim, when: datetime = NOW, scenario: str = "clear", **kw) -> dict:
    rec = sim.record(scenario, time=when.isoformat(), **kw)
    return build_scan(rec, "t").payload(format="json", record_sha256="0" * 64)


def _record(ledger, payload, seq=None):
    got = []
    rec = ledger.record_local(payload, seq, on_new=lambda r: got.extend(alarms(payload, r, POLICY)))
    return rec, [t for t, _ in got]


def test_window_is_calendar_months():
    assert window_start(datetime(2026, 3, 31, 12, tzinfo=UTC), 1) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert window_start(datetime(2028, 2, 29, tzinfo=UTC), 12) == datetime(2027, 2, 28, tzinfo=UTC)
    assert window_start(datetime(2026, 1, 15, tzinfo=UTC), 12) == datetime(2025, 1, 15, tzinfo=UTC)


def test_warning_and_limit_are_crossed_at_the_right_scan_and_survive_restart(tmp_path):
    sim = ScannerSim(dose_usv=3.0)
    ledger = DoseLedger(tmp_path, "site-a", POLICY)
    seen = [_record(ledger, _payload(sim, NOW - timedelta(minutes=10 - i)), seq=i + 1)[1] for i in range(4)]
    assert seen == [[], [], ["xray.dose_warning"], ["xray.dose_limit"]]  # 3, 6, 9 (>=8), 12 (>=10)
    assert ledger.check("A1234BC").allowed is False
    ledger.close()

    reopened = DoseLedger(tmp_path, "site-a", POLICY)  # a restart: same file
    check = reopened.check("A1234BC")
    assert (check.allowed, check.total_usv, check.remaining_usv) == (False, 12.0, 0.0)
    assert "do not scan" in check.reason and reopened.last_seq() == 4
    late = _payload(sim)
    rec, kinds = _record(reopened, late, seq=5)
    assert kinds == ["xray.dose_limit"] and rec.before_usv == 12.0  # scanned while over: still recorded
    rec, kinds = _record(reopened, late, seq=5)  # the same event replayed
    assert (rec.inserted, kinds, reopened.total("A1234BC")) == (False, [], 15.0)


def test_limit_exactly_reached_is_refused_and_warning_shown_below_it(tmp_path):
    ledger = DoseLedger(tmp_path, "site-a", POLICY)
    ledger.record_local(_payload(ScannerSim(dose_usv=8.0)), 1)
    below = ledger.check("A1234BC")
    assert below.allowed and below.warning and below.remaining_usv == 2.0
    ledger.record_local(_payload(ScannerSim(scanner="SC-2", dose_usv=2.0)), 2)
    assert ledger.check("A1234BC").allowed is False  # at the limit counts as refused


def test_rolling_window_drops_scans_older_than_twelve_months(tmp_path):
    sim = ScannerSim(dose_usv=6.0)
    ledger = DoseLedger(tmp_path, "site-a", POLICY)
    ledger.record_local(_payload(sim, NOW - timedelta(days=400)), 1)
    ledger.record_local(_payload(sim, NOW - timedelta(days=300)), 2)
    assert ledger.total("A1234BC") == 6.0
    assert [r["in_window"] for r in ledger.history("A1234BC")] == [False, True]
    assert ledger.total("A1234BC", NOW - timedelta(days=200)) == 12.0  # both inside back then


def test_alarm_or_nothing(tmp_path):
    ledger = DoseLedger(tmp_path, "site-a", POLICY)

    def store_down(_rec):
        raise OSError("disk gone")

    with pytest.raises(OSError):
        ledger.record_local(_payload(ScannerSim(dose_usv=9.0)), 1, on_new=store_down)
    assert ledger.total("A1234BC") == 0.0 and ledger.last_seq() == 0  # retried at next start


def test_lawful_scan_rule(tmp_path):
    ledger = DoseLedger(tmp_path, "site-a", POLICY)
    sim = ScannerSim(dose_usv=0.1)
    assert _record(ledger, _payload(sim, scenario="no_reason"))[1] == ["xray.unlawful_scan"]
    payload = _payload(sim, scenario="bad_reason")
    out = []
    ledger.record_local(payload, None, on_new=lambda r: out.extend(alarms(payload, r, POLICY)))
    assert out[0][1]["problem"] == "reason_not_allowed" and out[0][1]["reason"] == "random"
    assert _record(ledger, _payload(sim))[1] == []


@pytest.fixture
def central(tmp_path):
    key_path, pub_path, _ = generate_keypair(tmp_path / "keys", "central")
    return load_private_key(key_path), load_public_keys([pub_path]), pub_path


def _doc(key, issued_at, origins, site="site-a", subject="A1234BC"):
    return sign({"type": "xray.dose_records", "site": site, "issued_at": issued_at.isoformat(),
                 "subjects": [{"subject": subject, "origins": origins}]}, key)


def test_central_records_replace_a_sites_share_without_double_counting(tmp_path, central):
    key, trusted, _ = central
    ledger = DoseLedger(tmp_path, "site-a", POLICY)
    ledger.record_local(_payload(ScannerSim(dose_usv=2.0)), 1)
    t0 = NOW - timedelta(hours=1)
    other = {"site": "site-b", "scans": [{"scan_id": "B1", "dose_usv": 3.0, "time": t0.isoformat()}]}
    mine = {"site": "site-a", "scans": [{"scan_id": "A-copy", "dose_usv": 2.0, "time": t0.isoformat()}]}

    def push(doc):
        return apply(ledger, parse_verified(doc, site="site-a", trusted=trusted, clock_skew_s=60))

    assert push(_doc(key, t0, [other, mine])) == {"applied": 1, "stale": 0, "own_site": 1}
    assert ledger.total("A1234BC") == 5.0  # 2 local + 3 at site-b; central's copy of ours ignored
    assert push(_doc(key, t0, [other]))["stale"] == 1  # re-delivered: nothing added
    more = {"site": "site-b", "scans": [{"scan_id": "B1", "dose_usv": 3.0, "time": t0.isoformat()},
                                        {"scan_id": "B2", "dose_usv": 4.0, "time": NOW.isoformat()}]}
    push(_doc(key, NOW, [more]))
    assert ledger.total("A1234BC") == 9.0  # replaced, not added: 2 + 3 + 4
    push(_doc(key, NOW + timedelta(seconds=1), [{"site": "site-b", "total_usv": 1.5, "as_of": NOW.isoformat()}]))
    assert ledger.total("A1234BC") == 3.5
    sites = {r["site"] for r in ledger.history("A1234BC")}
    assert sites == {"site-a", "site-b"}


def test_central_records_are_refused_unless_signed_for_this_site(tmp_path, central):
    key, trusted, _ = central
    body = [{"site": "site-b", "total_usv": 1.0, "as_of": NOW.isoformat()}]
    forged = _doc(key, NOW, body)
    forged["subjects"][0]["origins"][0]["total_usv"] = 0.0
    cases = [(forged, "signature refused"), ({k: v for k, v in forged.items() if k != "signatures"}, "not signed"),
             (_doc(key, NOW, body, site="site-z"), "addressed to site 'site-z'"),
             (_doc(key, NOW + timedelta(hours=1), body), "in the future"),
             (_doc(key, NOW, [{"site": "site-b"}]), "either 'scans' or 'total_usv'")]
    for doc, expected in cases:
        with pytest.raises(DoseRecordsRejected, match=expected):
            parse_verified(doc, site="site-a", trusted=trusted, clock_skew_s=60)


def test_cli_check_ledger_and_import(tmp_path, central):
    key, _, pub_path = central
    state = tmp_path / "state"
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "d1", "site": "site-a", "role": "gate", "state_dir": str(state),
                                 "trust": {"central_keys": [str(pub_path)]},
                                 "xray": {"limit_usv": 10.0, "warning_usv": 8.0}}))
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--config", str(config), "xray", *args])

    fresh = run("check", "A1234BC", "--json")  # no ledger at all (daemon never ran, or a tablet): refused
    assert fresh.exit_code == 1 and json.loads(fresh.output)["decided"] is False
    assert "no dose ledger in" in json.loads(fresh.output)["reason"]
    text = run("check", "A1234BC")
    assert text.exit_code == 1 and text.output.count("cannot decide") == 1, text.output
    for args in (("--json",), ()):  # the history said "may be scanned" (exit 0) from no ledger at all
        history = run("ledger", "A1234BC", *args)
        assert history.exit_code == 1 and "no dose ledger in" in history.output, history.output
        assert "may be scanned" not in history.output
        assert not args or json.loads(history.output)["decided"] is False
    ledger = DoseLedger(state, "site-a", XraySettings(limit_usv=10.0, warning_usv=8.0))
    ledger.close()
    empty = run("check", "A1234BC", "--json")  # the daemon's ledger, nothing recorded yet: allowed
    assert empty.exit_code == 0 and json.loads(empty.output)["remaining_usv"] == 10.0
    ledger = DoseLedger(state, "site-a", XraySettings(limit_usv=10.0, warning_usv=8.0))
    ledger.record_local(_payload(ScannerSim(dose_usv=4.0)), 1)
    ledger.close()
    doc = tmp_path / "dose.json"
    doc.write_text(json.dumps(_doc(key, NOW, [{"site": "site-b", "total_usv": 6.0, "as_of": NOW.isoformat()}])))
    imported = run("import", str(doc), "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.output)["applied"] == 1
    refused = run("check", "A1234BC")
    assert refused.exit_code == 1 and "must not be scanned" in refused.output
    hist = json.loads(run("ledger", "A1234BC", "--json").output)
    assert hist["total_usv"] == 10.0 and [s["site"] for s in hist["scans"]] == ["site-a", "site-b"]
    text = run("ledger", "A1234BC").output
    assert "REFUSED" in text and "site-b" in text
    doc.write_text("{not json")
    bad = run("import", str(doc))
    assert bad.exit_code == 1 and "not valid JSON" in bad.output


@pytest.mark.parametrize("typed", ["A1234BC ", " A1234BC", "", "A1234BC\n", "A1234BÇ"])
def test_cli_refuses_a_subject_id_no_scan_can_carry(tmp_path, typed):
    """A subject at the limit, typed with a stray space (or empty, or non-ASCII), must not come
    back "may be scanned" from an empty ledger: the id is refused and named."""
    state = tmp_path / "state"
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "d1", "site": "site-a", "role": "gate", "state_dir": str(state),
                                 "xray": {"limit_usv": 10.0, "warning_usv": 8.0}}))
    ledger = DoseLedger(state, "site-a", XraySettings(limit_usv=10.0, warning_usv=8.0))
    ledger.record_local(_payload(ScannerSim(dose_usv=10.0), subject="A1234BC"), 1)
    ledger.close()
    for command in ("check", "ledger"):
        out = CliRunner().invoke(cli, ["--config", str(config), "xray", command, typed, "--json"])
        assert out.exit_code == 1, out.output
        error = json.loads(out.output)["error"]
        assert error.startswith(f"subject {typed!r} is not a subject id: expected 1-128 ASCII letters")
    assert CliRunner().invoke(cli, ["--config", str(config), "xray", "check", "A1234BC"]).exit_code == 1


def test_a_scanner_clock_far_off_does_not_hide_a_dose(tmp_path):
    ledger = DoseLedger(tmp_path, "site-a", POLICY)
    reset_clock = _payload(ScannerSim(dose_usv=3.0), datetime(1970, 1, 1, tzinfo=UTC))
    rec = ledger.record_local(reset_clock, 1, stored_at=NOW)
    assert rec.time_replaced and ledger.total("A1234BC") == 3.0  # counted when stored, not in 1970
    honest = _payload(ScannerSim(scanner="SC-2", dose_usv=1.0), NOW - timedelta(hours=2))
    assert ledger.record_local(honest, 2, stored_at=NOW).time_replaced is False


def test_a_bad_xray_section_names_the_key(tmp_path):
    from edge.config import load_settings
    from edge.errors import ConfigError

    path = tmp_path / "edge.toml"
    path.write_text(dump_toml({"device_id": "d1", "site": "s1", "role": "gate", "xray": {"warning_usv": 300.0}}))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "xray: got {'warning_usv': 300.0}; warning_usv (300.0) must not exceed limit_usv (250.0)" in info.value.lines[0]


def test_the_gate_policy_cannot_decide_without_its_xray_service():
    """A gate whose [xray] is off has no running ledger: its dose check refuses ("cannot decide"),
    never an answer from a ledger file an earlier run left, which misses every scan since."""
    from services.xray import check_with

    refused = check_with(None, "A1234BC")
    assert not refused.allowed and not refused.decided and "x-ray service is not running" in refused.reason

    class Running:
        def check(self, subject):
            return ("checked", subject)

    assert check_with(Running(), "A1234BC") == ("checked", "A1234BC")  # the running service answers
