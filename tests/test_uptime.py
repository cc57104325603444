"""The device's uptime: counted on from what the daemon persisted, the same one for every user."""

from __future__ import annotations

from edge.commands.seen import SeenIds, offline_clocks, read_uptime
from edge.uptime import Clocks, Moment, Uptime, up_bound


def test_the_daemons_uptime_is_the_one_the_replay_database_persists(tmp_path):
    assert read_uptime(tmp_path) == 0.0  # a device that never ran a daemon
    mono = {"t": 5.0}
    first = SeenIds(tmp_path, mono=lambda: mono["t"])
    mono["t"] += 100
    first.close()
    assert read_uptime(tmp_path) == 100.0
    # The next run: the daemon counts on from there and hands the same uptime to the router.
    mono["t"] = 1.0  # a reboot: the monotonic clock starts again
    uptime = Uptime(read_uptime(tmp_path), mono=lambda: mono["t"])
    seen = SeenIds(tmp_path, mono=lambda: 10**6, uptime=uptime)  # its own mono is not used
    mono["t"] += 20
    assert seen.uptime() == uptime() == 120.0
    seen.prune()  # persists it, as the router does now and then
    assert read_uptime(tmp_path) == 120.0 and offline_clocks(tmp_path).uptime() >= 120.0
    seen.close()


def test_a_moment_has_passed_only_when_both_clocks_have_reached_it():
    clocks = Clocks(now=lambda: 1000.0, uptime=lambda: 50.0)
    later = clocks.moment().plus(30)
    assert later.remaining(1030.0, 60.0) == 20.0  # the wall clock says yes, uptime not yet
    assert later.remaining(1010.0, 80.0) == 20.0  # and the other way round
    assert later.passed(1030.0, 80.0)
    assert clocks.until(900.0) == Moment(900.0, 50.0)  # a past wall time: now, by uptime
    assert up_bound(1200.0, 1000.0, 50.0) == 250.0
