"""`edge audit verify`: a healthy chain passes; every kind of tampering is caught at its seq."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.config import StoreSettings
from edge.events import make_event
from edge.store import Store
from edge.store._chain import chain_hash
from edge.testing.daemon import dump_toml

N = 20


@pytest.fixture
def device(tmp_path):
    """A config file and a store holding N events (seq 1..N), closed again."""
    state = tmp_path / "state"
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "dev-1", "site": "site-1", "role": "gate",
                                 "state_dir": str(state)}))
    store = Store(state, device="dev-1", site="site-1", settings=StoreSettings())
    for i in range(N):
        store.append(make_event(device="dev-1", site="site-1", type="turnstile.passage",
                                source="lane1", payload={"n": i, "card": f"c{i}"}))
    store.close()
    return config, state / "events.db"


def verify(config, *extra, subprocess_: bool = False):
    """`edge audit verify` in-process (fast); the real console entry point with subprocess_."""
    if subprocess_:
        proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "audit", "verify",
                               *extra], capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout + proc.stderr
    result = CliRunner().invoke(cli, ["--config", str(config), "audit", "verify", *extra])
    return result.exit_code, result.output


def verify_json(config) -> tuple[int, dict]:
    code, out = verify(config, "--json")
    return code, json.loads(out)


def tamper(db, sql, *args):
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)


def test_healthy_store_passes(device):
    config, _ = device
    code, out = verify(config, subprocess_=True)
    assert code == 0, out
    assert out.strip() == f"audit chain ok: {N} events checked (seq 1..{N})"
    code, report = verify_json(config)
    assert code == 0 and report["ok"] is True and report["checked"] == N and report["break_seq"] is None


def test_edited_body_is_caught_at_its_seq(device):
    config, db = device
    tamper(db, "UPDATE events SET body = replace(body, '\"card\":\"c5\"', '\"card\":\"c9\"') WHERE seq = 6")
    code, out = verify(config, subprocess_=True)
    assert code == 1
    assert out.startswith("audit chain BROKEN at seq 6: seq 6: contents do not match the chain (row edited?)")
    code, report = verify_json(config)
    assert (code, report["ok"], report["break_seq"], report["checked"]) == (1, False, 6, 5)


def test_deleted_middle_row_is_caught(device):
    config, db = device
    tamper(db, "DELETE FROM events WHERE seq = 10")
    code, report = verify_json(config)
    assert code == 1 and report["break_seq"] == 10
    assert report["problem"] == "seq 10 is missing (row deleted?)"


def test_deleted_newest_row_is_caught_by_the_signed_head(device):
    config, db = device
    tamper(db, f"DELETE FROM events WHERE seq = {N}")
    code, report = verify_json(config)
    assert code == 1 and report["break_seq"] == N
    assert "newest rows deleted" in report["problem"]


def test_deleted_newest_row_and_head_is_still_caught(device):
    config, db = device
    tamper(db, f"DELETE FROM events WHERE seq = {N}")
    tamper(db, "DELETE FROM meta WHERE key LIKE 'head_%'")
    code, report = verify_json(config)
    assert code == 1 and "signed chain head is missing" in report["problem"]


def test_edited_hash_is_caught(device):
    config, db = device
    tamper(db, "UPDATE events SET hash = ? WHERE seq = 7", bytes(32))
    code, report = verify_json(config)
    assert code == 1 and report["break_seq"] == 7


def test_recomputed_chain_without_the_key_is_caught(device):
    """An attacker who edits a row and re-hashes everything after it still cannot sign the head."""
    config, db = device
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
        prev = bytes(32)
        for seq, body in rows:
            if seq == 4:
                body = body.replace(b'"card":"c3"', b'"card":"cX"')
            prev = chain_hash(prev, body)
            conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = ?", (body, prev, seq))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
    code, report = verify_json(config)
    assert code == 1 and report["ok"] is False
    assert "bad signature" in report["problem"]


def test_a_row_moved_to_another_seq_is_caught(device):
    """Swapping two rows' contents (a reorder) breaks the chain at the first of them."""
    config, db = device
    with sqlite3.connect(db) as conn:
        (b3, h3), (b4, h4) = conn.execute("SELECT body, hash FROM events WHERE seq IN (3, 4) ORDER BY seq")
        conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = 3", (b4, h4))
        conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = 4", (b3, h3))
    code, report = verify_json(config)
    assert code == 1 and report["break_seq"] == 3


def test_verify_on_a_device_without_a_store_says_so(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate",
                                 "state_dir": str(tmp_path / "none")}))
    code, out = verify(config)
    assert code == 1 and "no event store" in out and "Traceback" not in out


def test_partly_deleted_head_is_caught_not_a_crash(device):
    config, db = device
    tamper(db, "DELETE FROM meta WHERE key = 'head_mac'")
    code, report = verify_json(config)
    assert code == 1 and "bad signature" in report["problem"]


def test_fresh_store_without_events_passes(tmp_path):
    state = tmp_path / "state"
    Store(state, device="d", site="s").close()
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate", "state_dir": str(state)}))
    code, report = verify_json(config)
    assert code == 0 and report["ok"] and report["checked"] == 0


def test_a_rewrite_by_someone_with_the_key_is_caught_by_centrals_heads(device, tmp_path):
    """The key holder re-hashes and re-signs the whole chain: the local walk passes, but the
    heads central recorded from earlier synced batches no longer match."""
    from edge.store._chain import mac

    config, db = device
    with sqlite3.connect(db) as conn:  # what central recorded: the chain head of each synced batch
        recorded = [{"seq": s, "hash": bytes(h).hex()} for s, h in
                    conn.execute("SELECT seq, hash FROM events WHERE seq IN (5, 10, 20)").fetchall()]
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps(recorded))
    code, out = verify(config, "--heads", str(heads))
    assert code == 0 and out.strip().endswith("central's heads: 3 of 3 match, 0 no longer stored"), out

    key = (db.parent / "secrets" / "audit.key").read_bytes()
    with sqlite3.connect(db) as conn:
        prev = bytes(32)
        for seq, body in conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall():
            if seq == 4:
                body = body.replace(b'"card":"c3"', b'"card":"cX"')
            prev = chain_hash(prev, body)
            conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = ?", (body, prev, seq))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_mac'", (mac(key, b"head", N, prev),))
    code, report = verify_json(config)
    assert code == 0 and report["ok"]  # the local walk alone is fooled
    code, out = verify(config, "--heads", str(heads), subprocess_=True)
    assert code == 1 and "REWRITTEN: at seq 5" in out and "3 head(s) differ" in out, out
    batches = tmp_path / "batches.jsonl"  # the batches themselves, one per line, work too
    batches.write_text("\n".join(json.dumps({"events": [], "chain": h}) for h in recorded))
    code, report = verify(config, "--heads", str(batches), "--json")
    assert code == 1 and len(json.loads(report)["heads"]["mismatches"]) == 3
    heads.write_text("not json")
    code, out = verify(config, "--heads", str(heads))
    assert code == 2 and "expected" in out
