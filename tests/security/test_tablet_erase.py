"""Red team: erasing a resident's mailbox on a tablet with one stolen key, or one local account."""

from __future__ import annotations

from edge.commands.build import build_command
from edge.commands.local import send
from tests._messaging_helpers import DEVICE, RESIDENT, SITE, Central
from tests.security._redteam import RESULTS, result_of


def test_purge_resident_needs_two_keys_or_two_operators(tmp_path, mosquitto, mqtt_collector, edge_daemon):
    central = Central(tmp_path)
    config = {"device_id": DEVICE, "site": SITE, "role": "tablet", "logging": {"level": "info", "format": "json"},
              "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
              "trust": {"central_keys": [str(central.pub), str(central.pub2)]},
              "messaging": {"central_seal_key": str(central.seal_pub)}, "drivers": []}
    collector = mqtt_collector(mosquitto, [RESULTS.replace("dev-1", DEVICE).replace("site-1", SITE)])
    daemon = edge_daemon(config)

    def purge(*keys, resident=RESIDENT):
        return build_command(target="edge", name="purge_resident", args={"resident": resident}, device=DEVICE,
                             site=SITE, keys=keys, reason="released")
    # A name with a trailing newline passed a `$`-anchored check and "purged" nothing, as success.
    stray = result_of(collector, mosquitto, purge(central.key, central.key2, resident=RESIDENT + "\n"),
                      site=SITE, device=DEVICE)
    assert stray["status"] != "ok" and "resident" in stray["detail"], stray
    one = result_of(collector, mosquitto, purge(central.key), site=SITE, device=DEVICE)
    assert (one["status"], one["reason"]) == ("rejected", "under_signed") and "erase" in one["detail"]
    local = send(daemon.state_dir, "edge", "purge_resident", {"resident": RESIDENT}, "released")
    assert local["reason"] == "under_signed" and local["result"]["effect"] == "erase"
    two = result_of(collector, mosquitto, purge(central.key, central.key2), site=SITE, device=DEVICE)
    assert two["status"] == "ok", two
