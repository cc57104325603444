"""Replay protection against a lying wall clock, driven by a fake clock backwards and forwards.

The attacks: a rogue NTP answer pushes the clock forward (ids would be pruned),
then back (the command is "valid" again); or real time passes and the clock is
then set back into a used command's validity. Also: a command waiting in the
queue when its key is revoked is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.commands.build import build_command
from edge.commands.seen import SeenIds
from edge.commands.settings import CommandsSettings
from edge.commands.verify import CommandRejected, Verifier
from edge.signing import key_id
from edge.trust import store_for_keys

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
HOURS_48 = 48 * 3600
TOPIC = "edge/v1/site-1/dev-1/cmd"


@pytest.fixture
def rig(tmp_path):
    clock = {"wall": T0, "mono": 50.0}
    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    back = []

    def seen():
        return SeenIds(tmp_path, clock=lambda: clock["wall"], mono=lambda: clock["mono"], skew_s=60,
                       on_clock_back=lambda wall, floor: back.append(floor - wall))

    store = store_for_keys({key_id(k.public_key()): k.public_key() for k in keys})
    verifier = Verifier(device="dev-1", site="site-1", trust=store, clock_skew_s=60,
                        settings=CommandsSettings(), targets={"hb": {"ping": "observe"}}, seen=seen(),
                        clock=lambda: clock["wall"])
    return clock, keys, verifier, back, seen, store


def _doc(keys, clock, ttl_s=300):
    return build_command(target="hb", name="ping", device="dev-1", ttl_s=ttl_s, keys=keys[:1],
                         now=datetime.fromtimestamp(clock["wall"], UTC))


def _refused(verifier, doc) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        verifier.remote(TOPIC, json.dumps(doc).encode(), site_wide=False)
    return info.value


def test_clock_pushed_forward_then_back_does_not_free_an_id(rig):
    clock, keys, verifier, back, _, _ = rig
    doc = _doc(keys, clock)
    verifier.remote(TOPIC, json.dumps(doc).encode(), site_wide=False)
    clock["wall"] += HOURS_48  # rogue NTP: 48 h ahead; the wall clock alone would prune the id
    assert verifier.seen.prune() == 0 and verifier.seen.count() == 1
    clock["wall"] = T0 + 60  # ...and back into the command's validity
    assert _refused(verifier, doc).reason == "replay"


def test_time_passes_then_the_clock_is_set_back_48h(rig):
    clock, keys, verifier, back, _, _ = rig
    doc = _doc(keys, clock)
    verifier.remote(TOPIC, json.dumps(doc).encode(), site_wide=False)
    clock["wall"] += HOURS_48
    clock["mono"] += HOURS_48  # really 48 h later: both clocks agree, the id may go
    assert verifier.seen.prune() == 1
    clock["wall"] = T0 + 60  # dead RTC battery: the clock is set back 48 h
    refused = _refused(verifier, doc)
    assert refused.reason == "expired"
    assert back and back[0] > HOURS_48 - 120  # the backwards jump was reported once


def test_the_floor_survives_a_restart(rig):
    clock, keys, verifier, back, seen, _ = rig
    doc = _doc(keys, clock)
    verifier.remote(TOPIC, json.dumps(doc).encode(), site_wide=False)
    clock["wall"] += HOURS_48
    clock["mono"] += HOURS_48
    verifier.seen.prune()
    verifier.seen.close()
    clock["mono"] = 3.0  # a reboot: the monotonic clock starts again
    clock["wall"] = T0 + 60
    verifier.seen = seen()
    assert _refused(verifier, doc).reason == "expired"


def test_small_forward_steps_are_adopted_and_no_alarm_without_a_jump(rig):
    clock, keys, verifier, back, _, _ = rig
    clock["wall"] += 30  # NTP slewing while the device runs
    clock["mono"] += 10
    assert verifier.seen.trusted_now() == clock["wall"]
    verifier.remote(TOPIC, json.dumps(_doc(keys, clock)).encode(), site_wide=False)
    assert back == []


def test_a_queued_command_of_a_key_revoked_meanwhile_is_refused(rig):
    clock, keys, verifier, _, _, store = rig
    doc = _doc(keys, clock)  # arrived, waiting in the router's queue
    fingerprint = store.anchors[key_id(keys[0].public_key())].fingerprint
    store.install_revocations({"serial": 1, "revoked": [{"fingerprint": fingerprint}]})
    assert _refused(verifier, doc).reason == "revoked_key"
    other = build_command(target="hb", name="ping", device="dev-1", keys=keys[1:],
                          now=datetime.fromtimestamp(clock["wall"], UTC))
    assert verifier.remote(TOPIC, json.dumps(other).encode(), site_wide=False) is not None
