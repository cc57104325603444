"""Attacks on remote configuration against the real daemon: each refused with a
``config.refused`` alarm naming the check, nothing written, nothing restarted; the
positive control (a good document applies) closes the test."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from edge.update.contract import EVENT_PAYLOADS
from edge.update.remote_config import build_document
from tests._remote_config_helpers import DEVICE, SITE, device_config, keys, publish, wait_events  # noqa: F401


def test_unsigned_wrong_key_not_allowed_and_expired_documents_are_refused(mosquitto, edge_daemon,
                                                                           device_config, keys):  # noqa: F811
    daemon = edge_daemon(device_config)
    pid = daemon.proc.pid
    good_key, command_key = keys["config"][0], keys["commands"][0]
    attacks = [
        ("signature", build_document({"drivers.hb1.rate": 9}, site=SITE, device=DEVICE, version=1, keys=[])),
        # A trust anchor of another role (command) must not sign configs.
        ("signature", build_document({"drivers.hb1.rate": 9}, site=SITE, device=DEVICE, version=1,
                                     keys=[command_key])),
        ("not_allowed", build_document({"trust.central_keys": ["/tmp/mine.pub"]}, site=SITE, device=DEVICE,
                                       version=1, keys=[good_key])),
        ("expired", build_document({"drivers.hb1.rate": 9}, site=SITE, device=DEVICE, version=1,
                                   keys=[good_key], issued_at=datetime.now(UTC) - timedelta(days=2),
                                   ttl_s=3600)),
        ("wrong_device", build_document({"drivers.hb1.rate": 9}, site=SITE, device="dev-2", version=1,
                                        keys=[good_key])),
        ("invalid", build_document({"drivers.hb1.rate": -1}, site=SITE, device=DEVICE, version=1,
                                   keys=[good_key])),
    ]
    tampered = build_document({"drivers.hb1.rate": 9}, site=SITE, device=DEVICE, version=1, keys=[good_key])
    tampered["settings"]["drivers.hb1.rate"] = 10
    attacks.append(("signature", tampered))
    for i, (_problem, doc) in enumerate(attacks):
        publish(mosquitto, doc)
        wait_events(daemon, "config.refused", i + 1)
    refused = wait_events(daemon, "config.refused", len(attacks))
    assert [e["payload"]["problem"] for e in refused] == [p for p, _ in attacks]
    assert all(e["priority"] == "alarm" for e in refused)
    for event in refused:
        EVENT_PAYLOADS["config.refused"].model_validate(event["payload"])
    assert not (daemon.workdir / "edge.remote.json").exists()
    # Positive control: the same change, properly signed for the whole site, applies.
    publish(mosquitto, build_document({"drivers.hb1.rate": 9}, site=SITE, version=2, keys=[good_key]),
            topic=f"edge/v1/{SITE}/config")
    assert wait_events(daemon, "config.applied")[0]["payload"]["version"] == 2
    assert daemon.proc.pid == pid and json.loads((daemon.workdir / "edge.remote.json").read_text())["version"] == 2
    # An older document replayed after that is refused as a replay.
    publish(mosquitto, build_document({"drivers.hb1.rate": 3}, site=SITE, device=DEVICE, version=1,
                                      keys=[good_key]))
    assert wait_events(daemon, "config.refused", len(attacks) + 1)[-1]["payload"]["problem"] == "replayed"
