"""Red team: one stolen command key, over MQTT, against a real gate daemon.

Every barrier or erase command signed once is refused ``under_signed`` whatever
it is called; the same commands signed by two distinct command keys run (the
positive control); the same key twice, a catalog key, and a barrier command
valid for longer than 10 minutes are refused.
"""

from __future__ import annotations

import pytest

from drivers.sim.turnstile import TurnstileSim
from edge.signing import sign
from tests._gate_helpers import lane_config
from tests.security._redteam import DEVICE, RESULTS, SYSTEM, Keys, alarms, plugin_driver, result_of


@pytest.fixture
def gate(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    keys = Keys(tmp_path / "keys")
    config = lane_config(tmp_path, sim)
    config["drivers"].append({"name": "vault", "kind": "vault.door"})
    base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                       trust={"central_keys": keys.trusted(), "clock_skew_s": 60}, **config)
    collector = mqtt_collector(mosquitto, [RESULTS, SYSTEM])
    daemon = edge_daemon(base_config, env=plugin_driver(tmp_path))
    yield mosquitto, collector, keys, daemon
    sim.stop()


ATTACKS = [  # (target, name, args): what one stolen key would love to do
    ("gate", "mode", {"mode": "free_passage", "reason": "fire drill (not really)"}),
    ("gate", "override", {"lane": "lane1", "direction": "in", "action": "grant", "reason": "vip", "passes": 50}),
    ("lane1-ts", "unlock", {}),
    ("edge", "purge_resident", {"resident": "res-7f3k9q"}),  # undeclared on a gate: barrier
    ("vault", "swing_wide", {}),  # a new name its driver declares barrier
]


def test_one_signature_never_opens_a_barrier_and_two_people_do(gate):
    broker, collector, keys, _ = gate
    for target, name, args in ATTACKS:
        got = result_of(collector, broker, keys.command("ops", target=target, name=name, args=args))
        assert (got["status"], got["reason"]) == ("rejected", "under_signed"), (name, got)
        assert "two-person rule" in got["detail"]
    every = {"mode", "override", "unlock", "purge_resident", "swing_wide"}
    collector.wait_for(lambda c: every <= {a["payload"]["name"] for a in alarms(c, "system.command_rejected")},
                       20, "a rejection alarm for every attack")

    # Positive control: two distinct command keys.
    mode = result_of(collector, broker, keys.command("ops", "security", target="gate", name="mode",
                                                     args={"mode": "free_passage", "reason": "evacuation"}))
    assert mode["status"] == "ok" and sorted(mode["signed_by"]) == sorted([keys.kid["ops"], keys.kid["security"]])
    vault = result_of(collector, broker, keys.command("ops", "security", target="vault", name="swing_wide"))
    assert vault["status"] == "ok" and vault["result"] == {"done": "swing_wide"}
    # Closing stays one signature: an officer can always lock a gate quickly.
    lockdown = result_of(collector, broker, keys.command("security", target="gate", name="mode",
                                                         args={"mode": "lockdown", "reason": "incident"}))
    assert lockdown["status"] == "ok", lockdown


def test_same_key_twice_catalog_key_and_long_validity_are_refused(gate):
    broker, collector, keys, _ = gate
    once = keys.command("ops", target="lane1-ts", name="unlock")
    twice = sign(once, keys.private["ops"])
    got = result_of(collector, broker, twice)
    assert got["reason"] == "under_signed" and len(got["signed_by"]) == 1, got  # one key, counted once
    # A key that only publishes course catalogues cannot sign a command, not even a harmless one.
    catalog_ping = result_of(collector, broker, keys.command("courses", target="edge", name="ping"))
    assert catalog_ping["reason"] == "wrong_role" and "catalog" in catalog_ping["detail"]
    # ...nor be the second person.
    with_catalog = result_of(collector, broker, keys.command("ops", "courses", target="lane1-ts", name="unlock"))
    assert with_catalog["reason"] == "under_signed"
    # A barrier command signed today must not work tomorrow: 10 minutes at most.
    day = result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="unlock",
                                                    ttl_s=24 * 3600))
    assert day["reason"] == "ttl_too_long" and "barrier" in day["detail"]
    # A second signature over different contents is refused, not ignored.
    first = keys.command("ops", target="gate", name="mode", args={"mode": "normal", "reason": "a"})
    other = sign({**first, "signatures": [], "args": {"mode": "free_passage", "reason": "a"}}, keys.private["security"])
    spliced = {**first, "signatures": first["signatures"] + other["signatures"]}
    got = result_of(collector, broker, spliced)
    assert got["reason"] == "bad_signature" and "does not match this content" in got["detail"]
    ping = result_of(collector, broker, keys.command("ops", target="edge", name="ping"))  # control
    assert ping["status"] == "ok"


def test_a_two_person_command_signed_for_a_whole_site_is_refused(gate):
    """Two people sign a grant for the site, not a gate: ids are remembered per device, so
    anyone on the broker could replay it to every gate of the site. Refused on the site
    topic and on the device's own topic; the same two signatures bound to the gate run."""
    broker, collector, keys, _ = gate
    grant = dict(target="gate", name="override",
                 args={"lane": "lane1", "direction": "in", "action": "grant", "reason": "escorted"})
    site_wide = keys.command("ops", "security", device=None, **grant)
    for device in (None, DEVICE):  # the site's topic, then replayed to this gate's own topic
        got = result_of(collector, broker, site_wide, device=device)
        assert (got["status"], got["reason"]) == ("rejected", "wrong_target"), got
        assert "name the one device" in got["detail"]
    bound = result_of(collector, broker, keys.command("ops", "security", **grant))
    assert bound["status"] == "ok", bound  # positive control


def test_a_two_person_command_the_target_would_refuse_is_malformed_before_it_runs(gate):
    """Two people sign a misspelt name or a bad argument: the target's own check (the one a
    local request passes before it is held) refuses it ``malformed``, naming what is wrong,
    before it runs and without using up its id. One signature is still ``under_signed``:
    a stolen key learns nothing about which commands exist. Spelt right, it runs."""
    broker, collector, keys, _ = gate
    for target, name, args, problem in (
            ("lane1-ts", "unlok", {}, "turnstile does not support command 'unlok'"),
            ("lane1-ts", "grant", {"direction": "in", "passes": 0}, "passes: Input should be greater than or equal to 1"),
            ("lane1-ts", "grant", {"direction": "in", "colour": "green"}, "colour: unknown argument"),
            ("gate", "override", {"lane": "lane9", "direction": "in", "action": "grant", "reason": "escorted"},
             "no gate lane named 'lane9'"),
            ("edge", "set-log-level", {"level": "loud"}, "args.level must be one of debug, info")):
        doc = keys.command("ops", "security", target=target, name=name, args=args)
        got = result_of(collector, broker, doc)
        assert (got["status"], got["reason"]) == ("rejected", "malformed"), got
        assert problem in got["detail"] and "refused before it runs" in got["detail"], got
        assert got["duration_ms"] is None, got  # never ran
        assert len(got["signed_by"]) == 2, got  # refused, it still says whose two keys signed it
        again = result_of(collector, broker, doc)  # its id was not used up: the same answer, not 'replay'
        assert (again["reason"], again["detail"]) == ("malformed", got["detail"]), again
    one = result_of(collector, broker, keys.command("ops", target="lane1-ts", name="unlok"))
    assert (one["status"], one["reason"]) == ("rejected", "under_signed"), one
    assert len(one["signed_by"]) == 1, one
    # Positive controls: the same commands spelt right, signed by the same two people, run.
    unlock = result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="unlock"))
    assert unlock["status"] == "ok", unlock
    assert sorted(unlock["signed_by"]) == sorted(got["signed_by"]), (unlock, got)  # the same two keys
    grant = result_of(collector, broker, keys.command("ops", "security", target="lane1-ts", name="grant",
                                                      args={"direction": "in", "passes": 1}))
    assert grant["status"] == "ok", grant
    level = result_of(collector, broker, keys.command("ops", target="edge", name="set-log-level",
                                                      args={"level": "info"}))
    assert level["status"] == "ok", level
