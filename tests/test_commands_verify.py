"""The acceptance rules of commands, in-process: every rejection reason and the happy path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.commands.build import build_command
from edge.commands.model import REJECT_REASONS
from edge.commands.seen import SeenIds
from edge.commands.settings import CommandsSettings
from edge.commands.verify import CommandRejected, Verifier
from edge.errors import CommandError
from edge.signing import key_id, sign
from edge.trust import store_for_keys

DEV_TOPIC, SITE_TOPIC = "edge/v1/site-1/dev-1/cmd", "edge/v1/site-1/cmd"


@pytest.fixture
def keys():
    return [Ed25519PrivateKey.generate() for _ in range(3)]


@pytest.fixture
def clock():
    return {"now": datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp(), "mono": 1000.0}


@pytest.fixture
def verifier(tmp_path, keys, clock):
    trusted = {key_id(k.public_key()): k.public_key() for k in keys[:2]}  # keys[2] is untrusted
    settings = CommandsSettings(two_person=["release"], max_ttl_s=3600)
    seen = SeenIds(tmp_path, clock=lambda: clock["now"], mono=lambda: clock["mono"], skew_s=60)
    return Verifier(device="dev-1", site="site-1", trust=store_for_keys(trusted), clock_skew_s=60,
                    settings=settings, targets={"lane1": {"ping": "observe", "open": "operate"}}, seen=seen,
                    clock=lambda: clock["now"])


def cmd(keys, clock, **kw):
    now = datetime.fromtimestamp(clock["now"], UTC)
    kw.setdefault("target", "lane1")
    kw.setdefault("name", "ping")
    kw.setdefault("device", "dev-1")
    return build_command(now=now, keys=keys, **kw)


def payload(doc) -> bytes:
    return json.dumps(doc).encode()


def rejected(verifier, data: bytes, topic=DEV_TOPIC) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        verifier.remote(topic, data, site_wide=topic == SITE_TOPIC)
    assert info.value.reason in REJECT_REASONS
    return info.value


def test_valid_command_is_accepted_once_then_replay(verifier, keys, clock):
    doc = cmd(keys[:1], clock, args={"n": 1})
    accepted = verifier.remote(DEV_TOPIC, payload(doc), site_wide=False)
    assert accepted.command.id == doc["id"] and accepted.signed_by == [key_id(keys[0].public_key())]
    again = rejected(verifier, payload(doc))
    assert again.reason == "replay" and again.id == doc["id"]


def test_replay_protection_survives_restart(tmp_path, verifier, keys, clock):
    doc = cmd(keys[:1], clock)
    verifier.remote(DEV_TOPIC, payload(doc), site_wide=False)
    verifier.seen.close()
    verifier.seen = SeenIds(tmp_path, clock=lambda: clock["now"], mono=lambda: clock["mono"])
    assert rejected(verifier, payload(doc)).reason == "replay"


def test_seen_ids_are_pruned_after_expiry(verifier, keys, clock):
    verifier.remote(DEV_TOPIC, payload(cmd(keys[:1], clock, ttl_s=30)), site_wide=False)
    assert verifier.seen.count() == 1
    clock["now"] += 30 + 60 + 1  # past expiry plus the skew allowance, by the wall clock only
    assert verifier.seen.prune() == 0 and verifier.seen.count() == 1
    clock["mono"] += 30 + 60 + 1  # ...and now by the uptime bound too
    assert verifier.seen.prune() == 1 and verifier.seen.count() == 0


def test_tampered_args_fail_the_signature(verifier, keys, clock):
    doc = cmd(keys[:1], clock, args={"dir": "in"})
    doc["args"]["dir"] = "out"
    err = rejected(verifier, payload(doc))
    assert err.reason == "bad_signature" and "does not match this content" in err.detail


@pytest.mark.parametrize("mutate, expect", [
    (lambda d: d.pop("signatures"), "not signed"),
    (lambda d: d.update(signatures=[]), "not signed"),
    (lambda d: d.update(signatures=[{"key_id": "00" * 8, "sig": "AAAA"}]), "not trusted"),
])
def test_missing_or_unknown_signature(verifier, keys, clock, mutate, expect):
    doc = cmd(keys[:1], clock)
    mutate(doc)
    err = rejected(verifier, payload(doc))
    assert err.reason == "bad_signature" and expect in err.detail


def test_untrusted_key_is_rejected(verifier, keys, clock):
    assert rejected(verifier, payload(cmd([keys[2]], clock))).reason == "bad_signature"


def test_expired_and_not_yet_valid(verifier, keys, clock):
    doc = cmd(keys[:1], clock, ttl_s=10)
    clock["now"] += 11
    clock["mono"] += 11
    err = rejected(verifier, payload(doc))
    assert err.reason == "expired" and "device clock says" in err.detail
    future = datetime.fromtimestamp(clock["now"], UTC) + timedelta(seconds=120)
    early = build_command(target="lane1", name="ping", device="dev-1", keys=keys[:1], now=future)
    assert rejected(verifier, payload(early)).reason == "not_yet_valid"
    within_skew = datetime.fromtimestamp(clock["now"], UTC) + timedelta(seconds=30)
    ok = build_command(target="lane1", name="ping", device="dev-1", keys=keys[:1], now=within_skew)
    assert verifier.remote(DEV_TOPIC, payload(ok), site_wide=False) is not None


def test_ttl_too_long(verifier, keys, clock):
    assert rejected(verifier, payload(cmd(keys[:1], clock, ttl_s=7200))).reason == "ttl_too_long"


@pytest.mark.parametrize("kw, expect", [
    ({"device": "dev-2"}, "for device 'dev-2'"),
    ({"device": None, "site": "site-9"}, "for site 'site-9'"),
    ({"device": None}, "neither"),
    ({"target": "lane9"}, "no driver named 'lane9'"),
])
def test_wrong_target(verifier, keys, clock, kw, expect):
    err = rejected(verifier, payload(cmd(keys[:1], clock, **kw)))
    assert err.reason == "wrong_target" and expect in err.detail


def test_site_wide_commands(verifier, keys, clock):
    for_site = cmd(keys[:1], clock, device=None, site="site-1", target="edge")
    assert verifier.remote(SITE_TOPIC, payload(for_site), site_wide=True).command.target == "edge"
    # Broadcasts for another device or a driver this device lacks are not ours: no answer at all.
    other = cmd(keys[:1], clock, device="dev-2", site="site-1")
    assert verifier.remote(SITE_TOPIC, payload(other), site_wide=True) is None
    lacking = cmd(keys[:1], clock, device=None, site="site-1", target="lane7")
    assert verifier.remote(SITE_TOPIC, payload(lacking), site_wide=True) is None


def test_two_person_rule(verifier, keys, clock):
    one = cmd(keys[:1], clock, name="unlock")  # undeclared on lane1: barrier
    err = rejected(verifier, payload(one))
    assert err.reason == "under_signed" and "has 1" in err.detail
    same_key_twice = sign(one, keys[0])
    assert rejected(verifier, payload(same_key_twice)).reason == "under_signed"
    with_untrusted = sign(one, keys[2])
    assert rejected(verifier, payload(with_untrusted)).reason == "under_signed"
    two = cmd(keys[:2], clock, name="unlock")
    assert len(verifier.remote(DEV_TOPIC, payload(two), site_wide=False).signed_by) == 2
    named = cmd(keys[:1], clock, name="release", target="edge")  # listed in [commands].two_person
    assert rejected(verifier, payload(named)).reason == "under_signed"


@pytest.mark.parametrize("raw, has_id", [
    (b"{not json", False),
    (b"[1, 2]", False),
    (json.dumps({"id": "abcdef-123", "name": "ping"}).encode(), True),
    (b"\xff\xfe", False),
    (b"x" * 70_000, False),
])
def test_malformed(verifier, raw, has_id):
    err = rejected(verifier, raw)
    assert err.reason == "malformed" and (err.id is not None) == has_id


def test_unknown_field_is_malformed_even_if_signed(verifier, keys, clock):
    doc = cmd([], clock)
    doc["shell"] = "rm -rf /"
    err = rejected(verifier, payload(sign(doc, keys[0])))
    assert err.reason == "malformed" and "shell" in err.detail


def test_no_trusted_keys_refuses_everything(tmp_path, keys, clock):
    v = Verifier(device="dev-1", site="site-1", trust=store_for_keys({}), clock_skew_s=60, settings=CommandsSettings(),
                 targets={}, seen=SeenIds(tmp_path), clock=lambda: clock["now"])
    err = rejected(v, payload(cmd(keys[:1], clock, target="edge")))
    assert err.reason == "bad_signature" and "trust.central_keys" in err.detail


def test_local_commands_skip_signatures_but_not_target_or_replay(verifier):
    accepted = verifier.local({"target": "lane1", "name": "open", "args": {}}, "alice")
    assert accepted.origin == "local" and accepted.operator == "alice" and not accepted.signed_by
    with pytest.raises(CommandRejected) as info:
        verifier.local({"target": "nope", "name": "ping"}, "alice")
    assert info.value.reason == "wrong_target"
    verifier.local({"target": "edge", "name": "ping", "id": "retry-key-1"}, "alice")
    with pytest.raises(CommandRejected) as info:
        verifier.local({"target": "edge", "name": "ping", "id": "retry-key-1"}, "alice")
    assert info.value.reason == "replay"


def test_rejection_alarms_are_rate_limited_and_the_rest_counted():
    from edge.commands.router import _AlarmLimiter

    now = [0.0]
    limiter = _AlarmLimiter(3, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 61.0  # next minute: the next recorded alarm reports what was suppressed
    assert limiter.allow() and limiter.take_suppressed() == 2 and limiter.take_suppressed() == 0


def test_keys_gen_cli(tmp_path):
    import os
    import stat

    from click.testing import CliRunner

    from edge.cli import cli
    from edge.signing import load_public_keys

    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "gen", "central-ops", "--role", "command", "--dir", str(tmp_path), "--json"])
    assert made.exit_code == 0, made.output
    info = json.loads(made.output)
    assert stat.S_IMODE(os.stat(info["private_key"]).st_mode) == 0o600
    assert list(load_public_keys([info["public_key"]])) == [info["key_id"]]
    again = runner.invoke(cli, ["keys", "gen", "central-ops", "--role", "command", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def test_keys_gen_refuses_a_missing_dir_instead_of_creating_it(tmp_path):
    from click.testing import CliRunner

    from edge.cli import cli

    runner = CliRunner()
    typo = tmp_path / "keyz" / "central"
    made = runner.invoke(cli, ["keys", "gen", "ops", "--role", "command", "--dir", str(typo), "--json"])
    assert made.exit_code == 2, made.output  # a command used wrongly (README's exit codes)
    error = json.loads(made.output)
    assert error["ok"] is False and error["dir"] == str(typo)
    assert "does not exist" in error["error"] and f"install -d -m 0700 {typo}" in error["error"]
    assert not (tmp_path / "keyz").exists()  # nothing created, no key written anywhere
    (tmp_path / "a-file").write_text("")
    text = runner.invoke(cli, ["keys", "gen", "ops", "--role", "command", "--dir", str(tmp_path / "a-file")])
    assert text.exit_code == 2 and "is not a folder" in text.output and not text.output.startswith("{")
    # Positive control: the folder, once created, gets the key pair.
    typo.mkdir(parents=True, mode=0o700)
    ok = runner.invoke(cli, ["keys", "gen", "ops", "--role", "command", "--dir", str(typo), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["private_key"] == str(typo / "ops.key"), ok.output


def test_a_local_request_its_target_refuses_is_never_held_and_a_broken_check_refuses(tmp_path, clock):
    def check(name, args):
        if name == "grant" and args.get("passes", 1) < 1:
            raise CommandError("grant: bad arguments: passes: must be at least 1")
        if name == "unlock":
            raise RuntimeError("bug in a plug-in")

    v = Verifier(device="dev-1", site="site-1", trust=store_for_keys({}), clock_skew_s=60, settings=CommandsSettings(),
                 targets={"lane1": {"grant": "barrier", "unlock": "barrier"}}, seen=SeenIds(tmp_path),
                 clock=lambda: clock["now"], checks={"lane1": check})
    for name, args, detail in (("grant", {"passes": 0}, "passes: must be at least 1"),
                               ("unlock", {}, "check failed (RuntimeError: bug in a plug-in)")):
        with pytest.raises(CommandRejected) as info:
            v.local({"target": "lane1", "name": name, "args": args}, "alice")
        assert info.value.reason == "malformed" and detail in info.value.detail
    assert v.approvals.listing() == []
    with pytest.raises(CommandRejected) as info:  # positive control: right, so held for a second person
        v.local({"target": "lane1", "name": "grant", "args": {"passes": 1}}, "alice")
    assert info.value.reason == "under_signed" and [p["name"] for p in v.approvals.listing()] == ["grant"]
