#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: set up (idempotent), the import contract
# (the core never imports a driver: pyproject.toml [tool.importlinter]), then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --gate
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
