"""Dose ledger and a wall clock pushed forward: a dose leaves the window only when the wall clock
and the device's uptime both say so (edge.uptime), for local doses and central's records alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drivers.sim.xray import ScannerSim
from drivers.xray.scan import build_scan
from edge.sqlite import open_db
from edge.uptime import Clocks
from services.xray.ledger import DoseLedger, window_end, window_start
from services.xray.settings import XraySettings

POLICY = XraySettings(limit_usv=10.0, warning_usv=8.0)
T0 = datetime(2026, 3, 31, 9, 30, tzinfo=UTC)
MONTH, YEAR = 31 * 86400, 366 * 86400


@pytest.fixture
def clock():
    return {"wall": T0.timestamp(), "up": 1000.0}


def _ledger(tmp_path, clock) -> DoseLedger:
    return DoseLedger(tmp_path, "site-a", POLICY, clocks=Clocks(now=lambda: clock["wall"], uptime=lambda: clock["up"]))


def _scan(when: datetime, dose: float = 10.0) -> dict:
    rec = ScannerSim(dose_usv=dose).record("clear", time=when.isoformat())
    return build_scan(rec, "t").payload(format="json", record_sha256="0" * 64)


@pytest.mark.parametrize("at", [datetime(2026, 3, 31, 9, tzinfo=UTC), datetime(2028, 2, 29, 23, 59, tzinfo=UTC),
                                datetime(2026, 1, 15, tzinfo=UTC), datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)])
@pytest.mark.parametrize("months", [1, 12, 13])
def test_window_end_is_when_the_window_no_longer_holds_the_dose(at, months):
    end = window_end(at, months)
    assert window_start(end, months) >= at
    assert window_start(end - timedelta(microseconds=1), months) < at


def test_a_local_dose_stays_counted_when_the_clock_is_pushed_forward(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)
    ledger.record_local(_scan(T0), 1)
    assert ledger.check("A1234BC").allowed is False
    clock["wall"] += 400 * 86400  # rogue NTP: 13 months ahead, a minute later by uptime
    clock["up"] += 60
    check = ledger.check("A1234BC")
    assert (check.allowed, check.total_usv) == (False, 10.0)
    assert [r["in_window"] for r in ledger.history("A1234BC")] == [True]
    ledger.close()
    ledger = _ledger(tmp_path, clock)  # a restart changes nothing
    assert ledger.total("A1234BC") == 10.0
    clock["up"] += YEAR  # the year has really passed: both clocks agree
    assert ledger.check("A1234BC").allowed is True and ledger.total("A1234BC") == 0.0


def test_uptime_alone_does_not_drop_a_dose(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)
    ledger.record_local(_scan(T0), 1)
    clock["up"] += 2 * YEAR  # a clock stuck (set back) for two years of running: the wall clock keeps it
    assert ledger.total("A1234BC") == 10.0


def test_a_clock_already_pushed_forward_when_the_scan_is_recorded_shortens_nothing(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)
    clock["wall"] += 20 * 3600  # the device is 20 h ahead; the scanner's clock is right
    ledger.record_local(_scan(T0), 1)
    clock["wall"] = window_end(T0, 12).timestamp() + 21 * 3600
    clock["up"] += YEAR - 2 * MONTH  # really: ten months and some later
    assert ledger.total("A1234BC") == 10.0


def test_a_scan_recorded_long_after_it_was_taken_is_not_held_a_whole_window_more(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)  # a ledger rebuilt from a 300-day-old event
    ledger.record_local(_scan(T0 - timedelta(days=300)), 1)
    clock["wall"] += 70 * 86400
    clock["up"] += 70 * 86400
    assert ledger.total("A1234BC") == 0.0


def test_centrals_record_stays_counted_from_its_issue_when_the_clock_was_pushed_before_it_came(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)
    taken = T0 - timedelta(days=330)  # a month and a bit left in the window at the real time T0
    clock["wall"] += 180 * 86400  # the device's clock was pushed 6 months ahead before the record came
    ledger.apply_remote("A1234BC", "site-b", [{"scan_id": "S1", "dose_usv": 10.0, "time": taken}], T0)
    assert ledger.total("A1234BC") == 10.0  # the wall clock alone would have dropped it at once
    clock["up"] += 30 * 86400
    assert ledger.total("A1234BC") == 10.0
    clock["up"] += 10 * 86400  # past the rest of its window as of central's issue
    assert ledger.total("A1234BC") == 0.0


def test_rows_without_a_believable_uptime_bound_get_one_as_if_the_wall_clock_were_right(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)
    ledger.record_local(_scan(T0 - timedelta(days=330)), 1)
    ledger.record_local({**_scan(T0 - timedelta(days=300)), "key": "k2", "scan_id": "s2"}, 2)
    ledger.close()
    db = open_db(tmp_path / "xray.db")
    db.execute("UPDATE scans SET leave_up = NULL WHERE scan_key != 'k2'")  # from before the uptime bound
    db.execute("UPDATE scans SET leave_up = 1e12 WHERE scan_key = 'k2'")  # the persisted uptime was lost
    db.close()
    ledger = _ledger(tmp_path, clock)
    assert ledger.total("A1234BC") == 20.0
    clock["wall"] += 40 * 86400  # 40 days really pass: the first (35 days left) goes, the second stays
    clock["up"] += 40 * 86400
    assert ledger.total("A1234BC") == 10.0
    clock["up"] += 30 * 86400
    assert ledger.total("A1234BC") == 10.0  # by uptime it has gone; by the wall clock not yet
    clock["wall"] += 30 * 86400
    assert ledger.total("A1234BC") == 0.0


def test_a_ledger_the_daemon_has_not_upgraded_is_read_by_the_wall_clock(tmp_path, clock):
    ledger = _ledger(tmp_path, clock)
    ledger.record_local(_scan(T0), 1)
    ledger.close()
    db = open_db(tmp_path / "xray.db")
    db.execute("ALTER TABLE scans DROP COLUMN leave_up")
    db.close()
    reader = DoseLedger(tmp_path, "site-a", POLICY, readonly=True,
                        clocks=Clocks(now=lambda: clock["wall"], uptime=lambda: clock["up"]))
    assert reader.total("A1234BC") == 10.0 and reader.history("A1234BC")[0]["in_window"]
    reader.close()
