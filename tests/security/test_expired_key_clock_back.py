"""Red team: a retired command key comes back to life when the clock is set back.

A key's roles file says when it expires (``expires``): central retires a key
that way without a revocation list. The device judges commands by its time
floor, so a clock set back (dead RTC, rogue NTP) revives no expired command;
but the key's own expiry was judged by the wall clock alone. Whoever still
holds the retired key and can set the clock back signs a command with the real
time: the floor finds the command fresh, the wall clock finds the key valid,
and it runs. The key must be expired by the same clock that judges commands.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from edge.commands.build import build_command
from edge.signing import generate_keypair, load_private_key
from edge.trust.roles import write_roles
from tests.security._redteam import DEVICE, RESULTS, SITE, SYSTEM, Keys, result_of

HOURS_48 = 48 * 3600


@pytest.fixture
def device(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    keys = Keys(tmp_path / "keys")
    key, pub, kid = generate_keypair(tmp_path / "keys", "retired", ["command"])
    # Retired in an hour (central's rotation): by the real time of the attack it has long expired.
    write_roles(pub, ["command"], expires=datetime.now(UTC) + timedelta(hours=1), kid=kid)
    base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                       trust={"central_keys": [*keys.trusted(), str(pub)], "clock_skew_s": 60},
                       drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 1.0}])
    collector = mqtt_collector(mosquitto, [RESULTS, SYSTEM])
    return mosquitto, collector, keys, load_private_key(key), edge_daemon(base_config)


def _ping(key, now: datetime) -> dict:
    return build_command(target="hb", name="ping", device=DEVICE, site=SITE, keys=[key], now=now)


def test_a_key_expired_by_the_time_floor_is_refused_when_the_clock_is_set_back(device):
    broker, collector, keys, retired, daemon = device
    assert result_of(collector, broker, _ping(retired, datetime.now(UTC)))["status"] == "ok"  # valid today
    daemon.stop()
    # The device runs 48 h more, then its clock is set back 48 h: the floor in commands.db says
    # the real time is 48 h past the wall clock, so the retired key expired 47 h ago.
    db = sqlite3.connect(daemon.state_dir / "commands.db")
    with db:
        db.execute("UPDATE meta SET value = value + ? WHERE key = 'uptime_s'", (HOURS_48,))
    db.close()
    daemon.start()
    real_now = datetime.now(UTC) + timedelta(seconds=HOURS_48)

    got = result_of(collector, broker, _ping(retired, real_now))
    assert (got["status"], got["reason"]) == ("rejected", "bad_signature"), got
    assert "expired" in got["detail"], got
    # Positive control: a key still valid at the real time signs the same command, which runs.
    ok = result_of(collector, broker, keys.command("ops", target="hb", name="ping", now=real_now))
    assert ok["status"] == "ok", ok
