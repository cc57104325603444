"""edge.ratelimit: the token bucket (a burst, then a rate) and the one-report-per-flood counter."""

from __future__ import annotations

import threading

from edge.ratelimit import CHANGE_BURST, ChangeFold, FloodReport, TokenBucket


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.t += 0.5
    assert not bucket.try_take()  # half a token: still refused, and nothing taken
    clock.t += 0.5
    assert bucket.try_take() and not bucket.try_take()
    clock.t += 3600  # a quiet hour refills the burst, no more
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_a_sustained_flood_gets_the_rate_and_no_more():
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=5, clock=clock)
    taken = 0
    for _ in range(16 * 60):  # 16 reads a second for a minute
        clock.t += 1 / 16
        taken += bucket.try_take()
    assert 5 + 59 <= taken <= 5 + 61


def test_blocking_take_waits_for_the_debt_and_stops_when_asked():
    bucket, stop = TokenBucket(rate=1000, burst=10), threading.Event()
    assert bucket.take(10, stop)  # the burst: at once
    stop.set()
    assert not bucket.take(500, stop)  # half a second of debt, but stopping
    assert TokenBucket(rate=0, burst=1).take(10**9, stop)  # rate 0: unlimited


def test_a_flood_is_one_start_a_count_per_window_and_an_end_with_the_total():
    clock, reports = Clock(), []
    flood = FloodReport(10.0, lambda *r: reports.append(r), clock=clock)
    flood.tick()
    assert reports == [] and not flood.active
    for _ in range(25):  # 25 refusals over 2.5 s
        flood.refused()
        clock.t += 0.1
        flood.tick()
    assert reports == [("started", 1, 1, 0.0)] and flood.active
    clock.t += 8  # 10.5 s after the start: the window's count
    flood.refused()
    flood.tick()
    assert reports[1] == ("continuing", 25, 26, 10.5)
    clock.t += 9.9
    flood.tick()
    assert len(reports) == 2  # quiet, but not for a whole window yet
    clock.t += 0.1
    flood.tick()
    assert reports[2] == ("ended", 0, 26, 10.5) and not flood.active
    assert sum(r[1] for r in reports) == 26  # every refusal counted once


def test_refusals_spread_thin_stay_one_flood():
    """One refusal every 9 s with a 10 s window: one start, never a start per refusal."""
    clock, reports = Clock(), []
    flood = FloodReport(10.0, lambda *r: reports.append(r), clock=clock)
    for _ in range(100):
        flood.refused()
        for _ in range(9):
            clock.t += 1
            flood.tick()
    assert [r[0] for r in reports].count("started") == 1
    assert len(reports) <= 1 + 900 / 10
    clock.t += 10
    flood.tick()
    assert reports[-1][0] == "ended" and reports[-1][2] == 100 == sum(r[1] for r in reports)


def _fold(clock, out, **kw):
    return ChangeFold(10.0, lambda key, value: out.append(("alarm", key, value)),
                      lambda *r: out.append(("flood", *r)), clock=clock, **kw)


def test_a_single_change_is_alarmed_at_once_and_a_flap_is_folded_leaving_its_final_state_alarmed():
    clock, out = Clock(), []
    fold = _fold(clock, out, initial={"tamper": False})
    assert fold.changed("tamper", True) and out == [("alarm", "tamper", True)]  # at once
    level = True
    for _ in range(999):  # a contact flapping at each 50 ms poll for 50 s
        clock.t += 0.05
        level = not level
        fold.changed("tamper", level)
        fold.tick()
    level = not level
    fold.changed("tamper", level)
    assert level is True
    alarms = [o for o in out if o[0] == "alarm"]
    floods = [o for o in out if o[0] == "flood"]
    assert floods[0][1] == "started" and floods[0][2] == 1
    # the burst, a refill every 30 s, and at most one catch-up per report: not one per change
    assert len(alarms) <= CHANGE_BURST + 2 + len(floods), alarms
    clock.t += 10
    fold.tick()
    ended = [o for o in out if o[0] == "flood"][-1]
    assert ended[1] == "ended" and not fold.active
    assert [o for o in out if o[0] == "alarm"][-1] == ("alarm", "tamper", True)  # the state it left
    assert len(alarms) + ended[3] >= 1001  # every change alarmed or counted (plus catch-ups)
    assert fold.suppressed == ended[3] == sum(f[2] for f in out if f[0] == "flood")
    clock.t += 60
    assert fold.changed("tamper", False)  # a quiet minute later: a real change, alarmed at once
    assert out[-1] == ("alarm", "tamper", False)


def test_a_flap_back_to_the_state_alarmed_last_is_not_alarmed_again_and_unknown_keys_are_news():
    clock, out = Clock(), []
    fold = _fold(clock, out, initial={"tamper": False}, burst=1)
    fold.changed("tamper", True)
    fold.changed("tamper", False)
    fold.changed("tamper", True)  # left as alarmed last
    fold.changed("online", False)  # never alarmed: news whatever it is
    clock.t += 10
    fold.tick()
    assert [o for o in out if o[0] == "alarm"] == [("alarm", "tamper", True), ("alarm", "online", False)]


def test_an_alarm_that_could_not_be_stored_is_still_owed():
    clock, out = Clock(), []

    def alarm(key, value):
        if not out:
            out.append("full")
            raise RuntimeError("store full")
        out.append(("alarm", key, value))

    fold = ChangeFold(10.0, alarm, lambda *r: None, initial={"k": False}, burst=1, clock=clock)
    try:
        fold.changed("k", True)
    except RuntimeError:
        pass
    fold.changed("k", True)  # over the limit: counted
    clock.t += 10
    fold.tick()
    assert out[-1] == ("alarm", "k", True)


def test_a_change_recorded_outside_the_fold_is_not_raised_again_by_a_report():
    clock, out = Clock(), []
    fold = _fold(clock, out, initial={"door": False}, burst=1)
    fold.changed("door", True)   # alarmed
    fold.changed("door", False)  # counted: a flood
    fold.known("door", True)     # then opened legitimately, recorded by its owner
    clock.t += 10
    fold.tick()
    assert [o for o in out if o[0] == "alarm"] == [("alarm", "door", True)]  # no stale "closed"
    assert fold.state == {"door": True}
