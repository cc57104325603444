"""The shipped example configs, untouched, enforce every rule of the trust issue (no opt-in)."""

from __future__ import annotations

from edge.commands.effects import effect_of
from edge.config import load_settings
from tests.conftest import REPO


def _example(role: str):
    return load_settings(REPO / "config" / f"{role}.example.toml", check_drivers=True, check_files=False)


def test_gate_example_is_safe_as_shipped():
    from drivers.turnstile._commands import EFFECTS as TURNSTILE
    from services.gate.commands import EFFECTS as GATE

    s = _example("gate")
    assert s.commands.allow_single_person_override is False
    assert s.commands.barrier_ttl_s <= 600 and s.gate.scan_freshness_s == 120
    streams = [d.options() for d in s.drivers if d.kind == "xray.stream"]
    assert streams and all(o.get("secret_file") and not o.get("allow_unauthenticated") for o in streams)
    assert len(s.trust.central_keys) >= 2  # two people need two command keys
    for effects, name, args in ((GATE, "mode", {"mode": "free_passage"}), (GATE, "override", {"action": "grant"}),
                                (TURNSTILE, "grant", {}), (TURNSTILE, "unlock", {}), (GATE, "mode", {"mode": "normal"})):
        assert effect_of(effects, name, args) == "barrier", name
    assert effect_of(GATE, "mode", {"mode": "lockdown"}) == "operate"
    # Presenting someone to the grant-only exit is a grant (two people); a visitor's exit checks the face.
    from services.gate.commands import effects

    lanes = effects(s.gate.lanes)
    assert effect_of(lanes, "present", {"lane": "lane1", "direction": "out"}) == "barrier"
    assert effect_of(lanes, "present", {"lane": "lane1", "direction": "out", "booking_id": "BK-1"}) == "operate"
    assert effect_of(lanes, "present", {"lane": "lane1", "booking_id": "BK-1"}) == "operate"


def test_tablet_example_keeps_erase_two_person():
    from edge.commands.builtin import BUILTIN_EFFECTS
    from services.tablet import _register_purge

    s = _example("tablet")
    assert s.commands.allow_single_person_override is False

    class _Messaging:
        def purge_resident(self, resident):
            return {}

    class _Router:  # what CommandRouter.add_builtin records for its own daemon
        effects: dict = {}

        def add_builtin(self, name, fn, effect):
            self.effects[name] = effect

    router = _Router()
    _register_purge(router, _Messaging())
    assert effect_of(router.effects, "purge_resident", {}) == "erase"
    assert "purge_resident" not in BUILTIN_EFFECTS  # nothing shared between daemons in one process


def test_the_old_switch_is_refused_with_a_clear_error(tmp_path):
    from edge.errors import ConfigError

    config = tmp_path / "edge.toml"
    config.write_text('device_id = "g"\nsite = "s"\nrole = "gate"\n[commands]\ntwo_person_physical = false\n')
    try:
        load_settings(config, check_drivers=False)
    except ConfigError as exc:
        assert "two_person_physical was removed" in str(exc)
    else:
        raise AssertionError("a config naming two_person_physical must not load")
