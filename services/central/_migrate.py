"""Schema migrations: plain versioned SQL files applied in order, each once.

``migrations/<dialect>/NNNN_name.sql`` files are applied in version order in
one transaction each, and recorded in ``schema_migrations``. Plain SQL rather
than Alembic: a central team reads, reviews and applies them with psql alone,
and the ingest needs no ORM.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file is misnamed, or the database is newer than this software."""


def migration_files(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL text) of every migration of ``dialect``, in version order."""
    folder = resources.files("services.central").joinpath("migrations", dialect)
    out = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration {dialect}/{entry.name}: expected NNNN_name.sql")
        out.append((int(match.group(1)), entry.name, entry.read_text()))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"migrations/{dialect}: two files share a version number")
    return out


def statements(sql: str) -> list[str]:
    """Split a migration into statements (our files keep ';' out of strings and comments)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def pending(applied: set[int], dialect: str) -> list[tuple[int, str, str]]:
    files = migration_files(dialect)
    known = {v for v, _, _ in files}
    if applied - known:
        raise MigrationError(f"the database has migration(s) {sorted(applied - known)} that this "
                             "edge version does not know: upgrade edge before running the ingest")
    return [f for f in files if f[0] not in applied]
