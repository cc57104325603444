#!/usr/bin/env bash
# The product on a fresh Debian 12 machine: a gate lane (turnstile simulator, face camera on
# a folder of test photos, x-ray scanner emulator) deciding with its policy, and a tablet in
# use, on the real daemons, with a local mosquitto standing in for central; what it receives
# is printed in words. Ctrl-C stops everything and says where the data went (./var/demo,
# safe to delete). `scripts/demo.sh --once` stops by itself after one visitor and one denial.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --gate
exec .venv/bin/python scripts/demo.py "$@"
