"""Reconnect backoff: exponential growth with full jitter, so devices do not come back in lockstep."""

from __future__ import annotations

import random

import pytest

from edge.mqtt.backoff import full_jitter


def test_first_retries_of_a_thousand_clients_spread_across_the_window():
    rng = random.Random(20261127)
    base, cap, clients = 1.0, 60.0, 1000
    delays = sorted(full_jitter(0, base, cap, rng.random) for _ in range(clients))
    assert all(0.0 <= d <= base for d in delays)
    # Spread, not clustered: every tenth of the window holds roughly a tenth of the clients...
    bins = [0] * 10
    for d in delays:
        bins[min(int(d / base * 10), 9)] += 1
    assert min(bins) >= 60 and max(bins) <= 140, bins
    # ...the spread covers almost the whole window...
    assert delays[-1] - delays[0] > 0.95 * base
    # ...and no 10 ms slice sees a thundering herd (uniform: ~10 expected per slice).
    worst = max(sum(1 for d in delays if s / 100 <= d < (s + 1) / 100) for s in range(100))
    assert worst <= 30, worst


def test_window_doubles_per_attempt_up_to_the_cap():
    top = lambda attempt: full_jitter(attempt, 0.5, 60.0, lambda: 1.0)  # noqa: E731
    assert [top(a) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert top(7) == 60.0 and top(10_000) == 60.0  # capped, and no overflow after months offline


def test_delay_never_negative_and_bad_attempt_rejected():
    assert full_jitter(3, 0.5, 60.0, lambda: 0.0) == 0.0
    with pytest.raises(ValueError, match="attempt"):
        full_jitter(-1, 0.5, 60.0)


def test_an_unreachable_broker_is_retried_within_ten_seconds_a_refusing_one_backs_off_long():
    from edge.mqtt.backoff import UNREACHABLE_CAP_S, reconnect_delay

    top = lambda attempt, refused: reconnect_delay(attempt, refused=refused, base=0.5, cap=60.0,  # noqa: E731
                                                   rand=lambda: 1.0)
    assert UNREACHABLE_CAP_S == 10.0
    # Unreachable: the whole short window from the first retry (a restarted broker's fleet lost it at
    # once; starting at base would bring them all back in the same second).
    assert [top(a, False) for a in (0, 3, 5, 20, 10_000)] == [10.0, 10.0, 10.0, 10.0, 10.0]
    assert [top(a, True) for a in (0, 3, 5, 20)] == [0.5, 4.0, 16.0, 60.0]
    # Still full jitter under the short cap: a fleet's reconnects are spread, not in lockstep.
    rng = random.Random(7)
    delays = [reconnect_delay(20, refused=False, base=0.5, cap=60.0, rand=rng.random) for _ in range(1000)]
    assert max(delays) <= 10.0 and min(delays) < 1.0 and sum(delays) / len(delays) == pytest.approx(5.0, abs=0.5)
