"""A real PostgreSQL server for tests, started from the system's binaries (initdb, pg_ctl).

It runs in a fresh temporary folder on a free port. PostgreSQL refuses to run
as root, so when the tests run as root the server runs as the ``postgres``
user (Debian's package creates it) through ``runuser``. ``PostgresUnavailable``
says why none can start (no binaries, no unprivileged user): the fixtures skip
with that reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from edge.testing.broker import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why and what to install."""


def bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found; "
                              "scripts/setup.sh installs them (apt-get install postgresql)")


class Postgres:
    """One server process; ``new_database()`` gives each test its own empty database."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the "
                                          "server as (PostgreSQL refuses root)") from None
        self.dir = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        # cwd: the server's own folder; the caller's may be closed to the postgres user (CI's clone).
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            log = self.log.read_text()[-1500:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-1500:]} {log}")

    def start(self) -> Postgres:
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "edge", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c max_connections=100 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://edge@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://edge@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass  # already gone; the folder goes anyway
        shutil.rmtree(self.dir, ignore_errors=True)
