#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: set up (idempotent), then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --gate
exec .venv/bin/python -m pytest "$@"
