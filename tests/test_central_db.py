"""The central database layer: migrations applied once, a newer database refused, clear CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.testing.broker import free_port
from services.central._migrate import MigrationError, migration_files, statements
from services.central.db import open_db


def central(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "central", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_migrations_apply_once_in_order_and_a_newer_database_is_refused(tmp_path):
    files = migration_files("sqlite")
    assert [v for v, _, _ in files] == sorted(v for v, _, _ in files) and files[0][0] == 1
    assert all(statements(sql) for _, _, sql in files)
    db = open_db(str(tmp_path / "c.db"))
    assert db.migrate() == [name for _, name, _ in files]
    assert db.migrate() == []  # already there: nothing applied twice
    db.query("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 'x')")
    with pytest.raises(MigrationError, match="9999"):
        db.migrate()


def test_both_dialects_ship_the_same_migration_versions():
    assert [v for v, _, _ in migration_files("sqlite")] == [v for v, _, _ in migration_files("postgres")]


def test_cli_says_what_is_missing_or_unreachable(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "EDGE_CENTRAL_DB"}
    missing = central("devices", env=env)
    assert missing.returncode == 2 and "--db" in missing.stderr
    down = central("gaps", "--db", f"postgresql://nobody@127.0.0.1:{free_port()}/none", "--json", env=env)
    assert down.returncode == 69
    assert json.loads(down.stdout)["ok"] is False and "PostgreSQL" in json.loads(down.stdout)["error"]
    bad_since = central("events", "--db", str(tmp_path / "c.db"), "--since", "yesterday", env=env)
    assert bad_since.returncode == 2 and "ISO 8601" in bad_since.stderr
    # A mistyped SQLite path answered "no gaps" from an empty database made on the spot.
    typo = tmp_path / "centrl" / "c.db"
    for cmd in ("gaps", "devices", "events", "proposals"):
        out = central(cmd, "--db", str(typo), "--json", env=env)
        assert out.returncode == 69 and "no central database there" in json.loads(out.stdout)["error"], out
    assert not typo.parent.exists()
    text = central("gaps", "--db", str(typo), env=env)
    assert text.returncode == 69 and "EDGE_CENTRAL_DB" in text.stderr and "Traceback" not in text.stderr
    open_db(str(tmp_path / "real.db")).migrate()  # positive control: an existing database answers
    assert central("gaps", "--db", str(tmp_path / "real.db"), env=env).stdout == "no gaps\n"


def test_store_id_is_kept_across_restarts_new_for_a_new_store_and_in_births(tmp_path):
    from edge.config import Settings
    from edge.mqtt.state import DeviceState
    from edge.store import Store

    class FakeLink:  # only what DeviceState touches at construction
        def set_will(self, topic, payload):
            self.will = (topic, payload)

        def add_connection_listener(self, fn):
            pass

    first = Store(tmp_path / "a", device="dev-1", site="site-1")
    store_id = first.store_id
    first.close()
    again = Store(tmp_path / "a", device="dev-1", site="site-1")
    try:
        assert again.store_id == store_id  # a restart is the same store
        settings = Settings(device_id="dev-1", site="site-1", role="gate", state_dir=tmp_path / "a")
        birth = json.loads(DeviceState(FakeLink(), settings, again).birth())
        assert birth["store_id"] == store_id and birth["ts"].endswith("Z")
    finally:
        again.close()
    replaced = Store(tmp_path / "b", device="dev-1", site="site-1")
    assert replaced.store_id != store_id
    replaced.close()


def test_the_daemon_does_not_load_the_central_ingest():
    code = ("import sys, edge.daemon, edge.cli.run; "
            "print(sorted(m for m in sys.modules if m.startswith(('services.central', 'psycopg'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
