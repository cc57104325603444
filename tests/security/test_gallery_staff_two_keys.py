"""Red team: one stolen gallery key enrolls a stranger as staff, or freezes the gallery.

The staff flow is identify, then grant: a staff face is a standing pass through the gate.
THREATS.md: a key with one purpose (galleries) must not open a barrier alone. So a gallery
document that makes someone staff (new, other templates, a longer window) needs signatures
from two distinct gallery keys, and so does a snapshot starting a new epoch (one key ahead of
central's epoch would make every later revoke "old"). On one key each is refused whole, as an
alarm, by the real daemon. Positive controls: visitors and revokes on one key, a staff
upsert on two, central's snapshot re-published on one key (it grants nothing new), and
central recovering a version one key made up by starting a new epoch on two.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from drivers.camera.gallery import Gallery
from edge import signing
from edge.testing.wait import wait_for
from tests._xray_helpers import daemon_events
from tests.test_biometrics_sync import SITE, Central, subject_doc


@pytest.fixture
def site(edge_daemon, base_config, mosquitto, mqtt_collector, tmp_path):
    """A gate daemon syncing its gallery; ``stolen`` signs with one gallery key, ``central`` with two."""
    made = [signing.generate_keypair(tmp_path / "keys", name) for name in ("gallery-a", "gallery-b")]
    keys = [signing.load_private_key(key) for key, _pub, _ in made]
    lane = tmp_path / "lane"  # the gallery is synced where a face camera runs
    lane.mkdir()
    cv2.imwrite(str(lane / "0.jpg"), np.zeros((480, 640, 3), np.uint8))
    base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                       trust={"central_keys": [str(pub) for _key, pub, _ in made]},
                       drivers=[{"name": "cam", "kind": "camera.face", "source": str(lane), "loop": True,
                                 "liveness": "none", "max_fps": 1}])
    births = mqtt_collector(mosquitto, f"edge/v1/{SITE}/dev-1/state")
    daemon = edge_daemon(base_config)
    birth = births.wait_for(lambda c: [m.json() for m in c.on_topic("state") if m.json().get("online")],
                            what="the daemon's birth message")[-1]
    stolen, central = Central(mosquitto, keys[:1], tmp_path), Central(mosquitto, keys, tmp_path)
    for c in (stolen, central):
        c.extra_recipients["dev-1"] = base64.b64decode(birth["seal_key"])  # central's device registry

    def events(kind: str, n: int) -> list[dict]:
        return wait_for(lambda: (e := daemon_events(daemon, f"biometric.gallery_{kind}")) and len(e) >= n and e,
                        30, f"{n} gallery documents {kind}")

    def staff() -> set[str]:
        gallery = Gallery(daemon.state_dir, readonly=True)
        try:
            return {s.subject_id for s in gallery.subjects(role="staff")}
        finally:
            gallery.close()

    yield SimpleNamespace(stolen=stolen, central=central, staff=staff,
                          applied=lambda n: events("updated", n), rejected=lambda n: events("rejected", n))
    stolen.stop()
    central.stop()


def test_one_gallery_key_cannot_make_anyone_staff_two_can(site):
    stolen, central = site.stolen, site.central
    until = datetime.now(UTC) + timedelta(hours=2)
    stolen.snapshot(1, 1, [subject_doc("guard-1", "obama_1"), subject_doc("mallory", "biden_1")])
    refused = site.rejected(1)[-1]
    assert refused["priority"] == "alarm"
    assert "makes guard-1, mallory staff" in refused["payload"]["error"]
    assert "needs signatures from 2 distinct keys" in refused["payload"]["error"]
    assert site.staff() == set()

    central.snapshot(1, 1, [subject_doc("guard-1", "obama_1")])  # positive control: two keys
    site.applied(1)
    stolen.upsert(1, 2, subject_doc("visitor-7", "kit_harington_1", role="visitor", valid_until=until))
    site.applied(2)  # a visitor on one key: a booked visit, every step of its flow still applies
    stolen.upsert(1, 3, subject_doc("mallory", "biden_1"))
    assert "makes mallory staff" in site.rejected(2)[-1]["payload"]["error"]
    stolen.upsert(1, 3, subject_doc("guard-1", "biden_1"))  # a guard's entry given another face
    assert "makes guard-1 staff" in site.rejected(3)[-1]["payload"]["error"]
    assert site.staff() == {"guard-1"}

    stolen.snapshot(1, 3, [subject_doc("guard-1", "obama_1"),  # re-published: nothing new granted
                           subject_doc("visitor-7", "kit_harington_1", role="visitor", valid_until=until)])
    site.applied(3)
    stolen.revoke(1, 4, "guard-1")  # taking a pass away is one key
    site.applied(4)
    central.upsert(1, 5, subject_doc("guard-2", "alex_lacamoire_1"))  # positive control: two keys
    site.applied(5)
    assert site.staff() == {"guard-2"}


def test_one_gallery_key_cannot_freeze_the_gallery_against_revokes(site):
    stolen, central = site.stolen, site.central
    central.snapshot(1, 1, [subject_doc("guard-1", "obama_1"), subject_doc("guard-2", "biden_1")])
    site.applied(1)
    # A new epoch far ahead, granting nothing new: taken, every later revoke would be "old".
    stolen.snapshot(10**12, 0, [subject_doc("guard-1", "obama_1"), subject_doc("guard-2", "biden_1")])
    refused = site.rejected(1)[-1]
    assert refused["priority"] == "alarm" and "starts a new epoch" in refused["payload"]["error"]
    central.revoke(1, 2, "guard-2")  # central's revoke still applies
    site.applied(2)
    assert site.staff() == {"guard-1"}
    # Within the epoch one key can still claim a version far ahead (it grants nothing new)...
    stolen.snapshot(1, 10**12, [subject_doc("guard-1", "obama_1")])
    site.applied(3)
    central.revoke(1, 3, "guard-1")  # ...so this revoke is "old" and does not apply,
    # ...and central, holding two keys, starts a new epoch without it: the revoke takes effect.
    central.snapshot(2, 0, [])
    site.applied(4)
    assert site.staff() == set()
