#!/usr/bin/env bash
# Set up a development/test environment on a fresh Debian 12 machine (run as root).
#   scripts/setup.sh            core + dev tools
#   scripts/setup.sh --gate     also the gate's imaging stack (OpenCV, dlib, face_recognition)
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_gate=0
for arg in "$@"; do
  case "$arg" in
    --gate) want_gate=1 ;;
    *) echo "setup.sh: unknown option '$arg' (expected --gate)" >&2; exit 2 ;;
  esac
done

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# PostgreSQL binaries: the central ingest's tests start their own server (initdb/pg_ctl).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# The packaged mosquitto service is not needed: tests and the demo start their own brokers.

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
extras="dev,central"
lockfile=requirements-dev.lock
[ "$want_gate" = 1 ] && extras="dev,central,gate" && lockfile=requirements-dev-gate.lock
# The locked versions, each file checked against its hash (scripts/lock.sh remakes the locks),
# then this tree itself, editable, without resolving anything again.
.venv/bin/pip install -q --require-hashes -r "$lockfile"
.venv/bin/pip install -q --no-deps -e .

if [ "$want_gate" = 1 ]; then
  # face_recognition declares a dependency on "dlib", which has no wheel and compiles
  # for a long time. The dlib-bin wheel ships the same dlib module prebuilt, so install
  # it and the model files first, then face_recognition itself without its declared deps
  # (requirements-face-nodeps.lock is installed with --no-deps and must stay so).
  # Pillow is face_recognition's own image loader (--no-deps skips it); only the face
  # benchmark's raw-library comparison imports face_recognition, the gate itself does not.
  .venv/bin/pip install -q --require-hashes -r requirements-face.lock
  .venv/bin/pip install -q --require-hashes --no-deps -r requirements-face-nodeps.lock
fi

# Every documented example says `edge ...`: put this checkout's command on the PATH. A link that
# points at another checkout's venv is replaced; a real program of that name is left alone.
link=/usr/local/bin/edge
if [ -w "$(dirname "$link")" ] && { [ -L "$link" ] || [ ! -e "$link" ]; }; then
  ln -sfn "$PWD/.venv/bin/edge" "$link"
  echo "setup: $link -> $PWD/.venv/bin/edge"
else
  echo "setup: could not link $link (not root?); use .venv/bin/edge or add $PWD/.venv/bin to PATH"
fi
echo "setup: ok (.venv ready; extras: $extras)"
