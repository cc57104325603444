#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: set up (idempotent), the import contract
# (the core never imports a driver: pyproject.toml [tool.importlinter]), lint and dead code
# (ruff, with F401/F841; vulture through scripts/deadcode.py), then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --gate
.venv/bin/lint-imports
.venv/bin/ruff check .
.venv/bin/python scripts/deadcode.py
exec .venv/bin/python -m pytest "$@"
