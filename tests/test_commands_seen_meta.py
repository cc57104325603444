"""commands.db's clock state (uptime, time floor) is not believed when it cannot be true.

Writing the file takes the daemon's account or root, so this is defence in depth: a damaged or
crafted value (NaN, infinite, negative, text, an uptime of centuries, a floor far in the future)
(SQLite keeps a NaN only as text) used to crash the daemon at start (a TypeError, a ValueError) or, worse, raise the time floor
into the far future, so every command, key and card was judged expired. Now such a value is
refused (named in ``refused`` with the file and the value, which the router alarms): an uptime
counts from 0, a floor is unknown and the wall clock is kept. A floor merely ahead of the wall
clock (clock set back, dead RTC) is a clock issue, and still kept.
"""

from __future__ import annotations

import sqlite3

import pytest

from edge.commands.seen import DB_NAME, SeenIds, read_uptime

NOW = 1_800_000_000.0  # a set wall clock (2027)
DAY = 86400.0


def _seen(state, wall=NOW, **kw) -> SeenIds:
    return SeenIds(state, clock=lambda: wall, mono=lambda: 0.0, **kw)


def _write_meta(state, **values) -> None:
    _seen(state).close()  # a genuine file first: uptime_s, floor_wall, floor_uptime
    db = sqlite3.connect(state / DB_NAME)
    with db:
        for key, value in values.items():
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
    db.close()


@pytest.mark.parametrize("key, value", [
    ("floor_wall", float("inf")), ("floor_wall", "NaN"), ("floor_wall", -1.0), ("floor_wall", "soon"),
    ("floor_wall", 5e9),  # beyond 2100
    ("floor_uptime", "nan"), ("floor_uptime", -3.0),
    ("floor_uptime", 1e6),  # a floor taken at an uptime never reached
])
def test_an_impossible_floor_is_unknown_the_wall_clock_is_kept_and_the_value_named(tmp_path, key, value):
    _write_meta(tmp_path, **{key: value})
    seen = _seen(tmp_path)
    try:
        assert seen.trusted_now() == NOW  # never raised into the future by the file
        assert [r["key"] for r in seen.refused] == [key], seen.refused
        refusal = seen.refused[0]
        assert refusal["path"] == str(tmp_path / DB_NAME) and refusal["value"] == repr(value)[:64]
    finally:
        seen.close()
    again = _seen(tmp_path)  # the file was rewritten with the floor this start believed
    assert again.refused == [] and again.trusted_now() == NOW
    again.close()


@pytest.mark.parametrize("value", [float("inf"), "nan", -5.0, 1e300, "long"])
def test_an_impossible_uptime_counts_from_zero_and_is_named(tmp_path, value):
    _write_meta(tmp_path, uptime_s=value)
    assert read_uptime(tmp_path) == 0.0  # what the daemon's uptime starts from: no crash, no infinity
    seen = _seen(tmp_path)
    try:
        assert seen.uptime() == 0.0 and seen.trusted_now() == NOW
        assert "uptime_s" in [r["key"] for r in seen.refused], seen.refused
    finally:
        seen.close()


def test_a_floor_ahead_of_the_wall_clock_is_a_clock_issue_and_kept(tmp_path):
    """Positive controls: a clock set back a day, or years (a rogue NTP server and a restart: the
    floor is what guards against it, so it is never dropped for being far ahead), and a dead RTC
    (1970), still meet the floor."""
    _write_meta(tmp_path, floor_wall=NOW + DAY, floor_uptime=0.0, uptime_s=0.0)
    seen = _seen(tmp_path)
    assert seen.refused == [] and seen.trusted_now() == NOW + DAY
    seen.close()
    set_back_years = _seen(tmp_path, wall=NOW - 5 * 365 * DAY)
    assert set_back_years.refused == [] and set_back_years.trusted_now() == NOW + DAY
    set_back_years.close()
    dead_rtc = _seen(tmp_path, wall=1000.0)
    assert dead_rtc.refused == [] and dead_rtc.trusted_now() == NOW + DAY
    dead_rtc.close()


def test_a_genuine_file_is_believed_and_counts_on(tmp_path):
    _write_meta(tmp_path, uptime_s=500.0, floor_wall=NOW - 100, floor_uptime=400.0)
    assert read_uptime(tmp_path) == 500.0
    seen = _seen(tmp_path, wall=NOW - 1000)  # the clock went back: the floor (NOW) wins
    assert seen.refused == [] and seen.uptime() == 500.0 and seen.trusted_now() == NOW
    seen.close()
