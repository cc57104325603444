"""Two people sign a barrier command from two machines through central's database.

The first signs and proposes; the second lists what waits, reads what it would do, and
co-signs it there; the result carries two valid signatures from distinct keys (what a device
requires), and the proposal shows it. The same key twice, and content changed after the
first signature, are refused. SQLite: the same code runs on PostgreSQL.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from edge.cli import cli
from edge.signing import generate_keypair, load_public_keys, verify


def _run(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def test_a_proposed_command_is_visible_to_the_second_approver_and_cosigned_there(tmp_path):
    ops_key, ops_pub, ops_id = generate_keypair(tmp_path, "ops", roles=["command"])
    sec_key, sec_pub, sec_id = generate_keypair(tmp_path, "security", roles=["command"])
    db, out = tmp_path / "central.db", tmp_path / "grant.json"
    first = _run("cmd", "sign", "--key", ops_key, "--target", "lane1", "--name", "grant",
                 "--arg", "direction=in", "--device", "gate-1", "--site", "site-1", "--ttl", "600",
                 "--reason", "escorted visitor", "--out", out)
    assert first.exit_code == 0, first.output
    proposed = _run("central", "propose", out, "--db", db)
    assert proposed.exit_code == 0, proposed.output
    command_id = json.loads(out.read_text())["id"]

    listed = _run("central", "proposals", "--db", db, "--json")
    [waiting] = json.loads(listed.output)
    assert waiting["id"] == command_id and waiting["_signatures"] == 1
    assert (waiting["target"], waiting["name"], waiting["args"]) == ("lane1", "grant", {"direction": "in"})
    text = _run("central", "proposals", "--db", db).output
    assert command_id in text and 'lane1 grant {"direction": "in"} for gate-1' in text

    same = _run("central", "cosign", command_id, "--db", db, "--key", ops_key)
    assert same.exit_code == 1 and "already signed" in same.output
    second = _run("central", "cosign", command_id, "--db", db, "--key", sec_key, "--signer-pub", ops_pub, "--json")
    assert second.exit_code == 0, second.output
    signed = json.loads(second.output.splitlines()[-1])
    keys = load_public_keys([ops_pub, sec_pub])
    assert sorted(verify(signed, keys, required=2)) == sorted([ops_id, sec_id])
    [stored] = json.loads(_run("central", "proposals", "--db", db, "--json").output)
    assert stored["_signatures"] == 2 and stored["signatures"] == signed["signatures"]


def test_changed_content_and_a_clash_of_ids_are_refused(tmp_path):
    ops_key, ops_pub, _ = generate_keypair(tmp_path, "ops", roles=["command"])
    sec_key, _, _ = generate_keypair(tmp_path, "security", roles=["command"])
    db, out = tmp_path / "central.db", tmp_path / "unlock.json"
    assert _run("cmd", "sign", "--key", ops_key, "--target", "lane1", "--name", "unlock", "--device", "gate-1",
                "--ttl", "600", "--out", out).exit_code == 0
    doc = json.loads(out.read_text())
    doc["args"] = {"hold_open_s": 3600}  # changed after the first signature
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    assert _run("central", "propose", tampered, "--db", db).exit_code == 0  # the device would refuse it...
    refused = _run("central", "cosign", doc["id"], "--db", db, "--key", sec_key, "--signer-pub", ops_pub)
    assert refused.exit_code == 1 and "does not cover this content" in refused.output  # ...and so does central
    clash = _run("central", "propose", out, "--db", db)  # same id, other content
    assert clash.exit_code == 1 and "already proposed" in clash.output
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(json.dumps({**doc, "signatures": []}))
    bad = _run("central", "propose", unsigned, "--db", db)
    assert bad.exit_code == 1 and "not a signed command" in bad.output
