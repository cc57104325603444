"""The remote document beside the config file, as load_settings reads it: checked again at
every load, skipped for the last good one when it did not confirm in time."""

from __future__ import annotations

import json
import time

import pytest

from edge.config import load_settings
from edge.signing import generate_keypair, load_private_key
from edge.testing.daemon import dump_toml
from edge.update import remote_config as rc


@pytest.fixture
def setup(tmp_path):
    key, pub, _ = generate_keypair(tmp_path / "keys", "config", ["config"])
    config = tmp_path / "edge.toml"
    state = tmp_path / "state"
    config.write_text(dump_toml({"device_id": "dev-1", "site": "site-1", "role": "tablet", "state_dir": str(state),
                                 "trust": {"central_keys": [str(pub)]}, "remote_config": {"enabled": True},
                                 "drivers": [{"name": "hb1", "kind": "sim.heartbeat", "rate": 5}]}))
    sign = load_private_key(key)

    def doc(rate, version):
        return json.dumps(rc.build_document({"drivers.hb1.rate": rate}, site="site-1", device="dev-1",
                                            version=version, keys=[sign])).encode()

    return config, state, doc


def _rate(config) -> float:
    return load_settings(config).drivers[0].options()["rate"]


def test_accepted_document_is_laid_over_the_local_file(setup):
    config, state, doc = setup
    assert _rate(config) == 5
    rc.remote_path(config).write_bytes(doc(20, 1))
    assert _rate(config) == 20


def test_a_tampered_stored_document_is_ignored(setup):
    config, state, doc = setup
    tampered = json.loads(doc(20, 1))
    tampered["settings"]["drivers.hb1.rate"] = 50
    rc.remote_path(config).write_text(json.dumps(tampered))
    assert _rate(config) == 5


def test_an_unconfirmed_document_past_its_deadline_gives_way_to_the_last_good(setup):
    config, state, doc = setup
    rc.remote_path(config).write_bytes(doc(20, 2))
    rc.write_record(state, {"applied": 1, "pending": 2, "deadline": time.time() + 60, "failed": []})
    assert _rate(config) == 20  # on probation: the new one runs
    rc.write_record(state, {"applied": 1, "pending": 2, "deadline": time.time() - 1, "failed": []})
    assert _rate(config) == 5  # crashed past its deadline, no good one: the local file alone
    rc.good_path(config).write_bytes(doc(7, 1))
    assert _rate(config) == 7  # the last good document


def test_a_document_signed_by_a_key_without_the_config_role_is_ignored(setup, tmp_path):
    config, state, doc = setup
    key, pub, _ = generate_keypair(tmp_path / "other", "ops", ["command"])
    text = config.read_text().replace('central_keys = [', f'central_keys = ["{pub}", ')
    config.write_text(text)
    assert load_settings(config).trust.central_keys[0] == pub  # trusted, but for commands only
    signed = rc.build_document({"drivers.hb1.rate": 20}, site="site-1", device="dev-1", version=1,
                               keys=[load_private_key(key)])
    rc.remote_path(config).write_text(json.dumps(signed))
    assert _rate(config) == 5


def test_config_check_names_a_missing_anchor(tmp_path):
    from edge.errors import ConfigError

    config = tmp_path / "edge.toml"
    base = {"device_id": "dev-1", "site": "site-1", "role": "tablet", "state_dir": str(tmp_path / "state")}
    config.write_text(dump_toml({**base, "update": {"metadata_url": "https://updates.example/metadata/"}}))
    with pytest.raises(ConfigError, match="trusted_root is required"):
        load_settings(config)
    config.write_text(dump_toml({**base, "update": {"metadata_url": "https://updates.example/metadata/",
                                                    "trusted_root": str(tmp_path / "nope.json")}}))
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert any("update.trusted_root" in line and "not found" in line for line in err.value.lines)


class _Link:
    connected = True

    def subscribe(self, *args, **kwargs):
        pass


class _Daemon:
    def __init__(self, settings):
        self.settings, self.link, self.trust, self.supervisor, self.components = settings, _Link(), None, None, []
        self.emitted: list[str] = []

    def emit(self, type, payload, priority, source):
        self.emitted.append(type)

    def request_restart(self, reason):
        self.emitted.append("restart")


def test_a_cut_between_the_record_and_the_document_is_forgotten_not_applied(setup):
    from edge.update.config_agent import RemoteConfigAgent

    config, state, doc = setup
    rc.remote_path(config).write_bytes(doc(20, 1))
    rc.write_record(state, {"applied": 1, "pending": 2, "deadline": time.time() + 60, "failed": []})
    daemon = _Daemon(load_settings(config))
    agent = RemoteConfigAgent(daemon, config)
    agent.start()
    deadline = time.monotonic() + 10
    while rc.read_record(state)["pending"] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.stop()
    record = rc.read_record(state)
    assert record["pending"] is None and record["applied"] == 1 and record["failed"] == []
    assert daemon.emitted == []  # neither applied nor rolled back: the retained copy comes again
    assert _rate(config) == 20
