"""The fleet simulator (real store + uplink per device, 50 devices in 2 processes) end to end:
every event any device's store accepted is in the central database once, through each disruption."""

from __future__ import annotations

import pytest

from services.central.fleet_run import run_scenario


@pytest.mark.parametrize("scenario, shared", [
    ("broker_restart", False),   # plain subscription: mosquitto 2.0 keeps it across its restart
    ("consumer_crash", True),    # the $share group, its one member killed -9 and restarted
    ("bridge_outage", False),    # devices -> site broker -> bridge (cut, restored) -> central
])
def test_fleet_scenario_loses_nothing(scenario, shared, tmp_path):
    # A 1 s disruption in 2 s of load (some 200 events in all); backoff_max_s 2 narrows the window an
    # unreachable broker is retried in from 10 s to 2 s, so the 50 come back as a storm, and sooner.
    result = run_scenario(scenario, tmp_path, devices=50, processes=2, load_s=2.0, down_s=1.0, backoff_max_s=2.0,
                          shared=shared)
    assert result["events_sent"] > 100, result
    assert result["events_lost"] == 0, result
    assert result["devices_with_mismatch"] == 0, result
    if scenario == "broker_restart":
        assert result["connect_attempts"] >= 50 and result["reconnect_all_s"] < 60, result
