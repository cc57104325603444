#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: a gate and a tablet daemon with simulated
# devices, a local mosquitto, and the events flowing to it, printed as they arrive.
# Ctrl-C stops everything. Work files live in ./var/demo (safe to delete).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --gate
exec .venv/bin/python scripts/demo.py "$@"
