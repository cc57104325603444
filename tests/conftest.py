"""Shared test helpers. The harness fixtures themselves come from edge.testing (pytest11)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FACES = REPO / "tests" / "data" / "faces"


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory):
    """Caches (the face encoder's converted weights) go to a folder of this run, not ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


@pytest.fixture
def base_config(tmp_path) -> dict:
    """A minimal valid config dict for a daemon under test."""
    return {"device_id": "dev-1", "site": "site-1", "role": "gate", "state_dir": str(tmp_path / "state"),
            "logging": {"level": "info", "format": "json"}, "drivers": []}


@pytest.fixture
def biometrics_cli(tmp_path):
    """``edge biometrics ARGS...`` in this process (CliRunner) on a fresh gate config in tmp_path:
    the face models load once for all the tests that use it. Returns click's Result."""
    from click.testing import CliRunner

    from edge.cli import cli as edge_cli
    from edge.testing.daemon import dump_toml

    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "gate-1", "site": "site-1", "role": "gate",
                                 "state_dir": str(tmp_path / "state")}))

    def run(*args):
        r = CliRunner().invoke(edge_cli, ["--config", str(config), "biometrics", *map(str, args)])
        if r.exception and not isinstance(r.exception, SystemExit):
            raise r.exception
        r.returncode = r.exit_code
        return r

    return run
