#!/usr/bin/env bash
# Install edge onto a device (run as root from a checkout or release tree).
#
#   scripts/install.sh --role gate|tablet [--wheel FILE] [--root DIR] [--no-deps]
#
# What it does:
#   - a virtualenv in /opt/edge with the edge wheel and the role's extras
#     (gate: OpenCV, numpy, dlib, face_recognition; tablet: the core only, never OpenCV/dlib)
#   - the system user and group "edge" (no login, no home)
#   - /etc/systemd/system/edge.service (enabled, not started)
#   - /etc/edge/edge.toml from config/ROLE.example.toml, never overwriting an existing one
#   - /etc/edge/keys (0700) for the device's private keys (files in it 0600)
#
# Options:
#   --role gate|tablet  required: which extras and which config skeleton
#   --wheel FILE        install this wheel instead of building one from this tree
#   --root DIR          stage under DIR, to be copied to / of a device; useradd, chown and
#                       systemctl are then only printed, never run. The venv names its final
#                       paths (/opt/edge), so the device needs PY at the same path as here
#                       (Debian 12's /usr/bin/python3.11 when PY is Debian's python3)
#   --no-deps           install the wheel without its dependencies (offline staging/tests)
#   --tuf-root FILE     the release channel's TUF root (central's 1.root.json) as
#                       /etc/edge/tuf-root.json: the anchor of signed updates (docs/updates.md)
#   --python PY         interpreter for the venv (default: python3)
#   --no-venv-pip       create the venv without pip and install into it with PY's own pip
#                       (seconds instead of half a minute; PY's pip must be 22.3 or newer)
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/edge            # systemd/edge.service runs $PREFIX/bin/edge
CONF_DIR=/etc/edge
UNIT_DIR=/etc/systemd/system
SERVICE_USER=edge
ROOT=""
ROLE=""
WHEEL=""
NO_DEPS=0
TUF_ROOT=""
VENV_PIP=1
PYTHON="${PYTHON:-python3}"

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --role) ROLE="${2:-}"; shift 2 ;;
    --role=*) ROLE="${1#*=}"; shift ;;
    --root) ROOT="${2:-}"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --wheel) WHEEL="${2:-}"; shift 2 ;;
    --wheel=*) WHEEL="${1#*=}"; shift ;;
    --python) PYTHON="${2:-}"; shift 2 ;;
    --python=*) PYTHON="${1#*=}"; shift ;;
    --no-deps) NO_DEPS=1; shift ;;
    --tuf-root) TUF_ROOT="${2:-}"; shift 2 ;;
    --tuf-root=*) TUF_ROOT="${1#*=}"; shift ;;
    --no-venv-pip) VENV_PIP=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

case "$ROLE" in
  gate|tablet) ;;
  "") die "--role is required: gate or tablet" ;;
  *) die "--role must be gate or tablet, not '$ROLE'" ;;
esac
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT" || die "cannot create --root '$ROOT'"
  ROOT="$(cd "$ROOT" && pwd)"
elif [ "$(id -u)" != 0 ]; then
  die "run as root (or stage into a folder with --root DIR)"
fi
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "--wheel '$WHEEL' does not exist"
[ -z "$TUF_ROOT" ] || [ -f "$TUF_ROOT" ] || die "--tuf-root '$TUF_ROOT' does not exist"
command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' interpreter; install python3 (and python3-venv)"

# Outside --root these run for real; under --root they are printed for the operator.
system() {
  if [ -n "$ROOT" ]; then say "would run (skipped under --root): $*"; else "$@"; fi
}

# A venv built at DIR/opt/edge names that path in its scripts' shebangs, its activate
# scripts, pyvenv.cfg and its bytecode. Under --root, rewrite each to the final $PREFIX so
# the tree runs once copied to / of the device. What cannot move is the base interpreter:
# bin/python links to it and pyvenv.cfg's home names its folder, so the device needs the
# same Python at the same path (Debian 12: /usr/bin/python3.11).
relocate_venv() {
  local f
  { grep -rlIF --null "$venv" "$venv/bin" "$venv/pyvenv.cfg" || true; } | while IFS= read -r -d '' f; do
    [ -L "$f" ] || sed -i "s#$venv#$PREFIX#g" "$f"
  done
  find "$venv" -name '__pycache__' -type d -prune -exec rm -rf {} +
  # Byte-compile with the final paths recorded as the source files' names (tracebacks).
  "$PYTHON" -m compileall -q -s "$ROOT" -p / "$venv/lib" >/dev/null
  if grep -rlIF "$ROOT" "$venv" >/dev/null; then
    die "staged venv still names $ROOT: $(grep -rlIF "$ROOT" "$venv" | head -3 | tr '\n' ' ')"
  fi
  base="$(readlink -f "$venv/bin/python")"
  say "staged for $PREFIX: the device needs $base ($("$base" -V 2>&1)) at that same path"
}

# --- 1. the virtualenv --------------------------------------------------------
venv="$ROOT$PREFIX"
if [ "$VENV_PIP" = 1 ]; then
  pip=("$venv/bin/python" -m pip)
  build_pip=("${pip[@]}")
  venv_args=()
else
  pip=("$PYTHON" -m pip --python "$venv/bin/python")  # this interpreter's pip installs into it
  build_pip=("$PYTHON" -m pip)
  venv_args=(--without-pip)
fi
nocompile=()
[ -z "$ROOT" ] || nocompile=(--no-compile)  # relocate_venv compiles with the final paths
if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtualenv $PREFIX"
  "$PYTHON" -m venv "${venv_args[@]}" "$venv"
fi
if [ -z "$WHEEL" ]; then
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  say "building the edge wheel from $SRC"
  isolation=()
  # Offline: build with the setuptools and wheel already installed instead of fetching them.
  [ "$NO_DEPS" = 1 ] && isolation=(--no-build-isolation)
  "${build_pip[@]}" wheel -q --no-deps "${isolation[@]}" -w "$build" "$SRC" >/dev/null
  WHEEL="$(ls "$build"/edge-*.whl)"
fi
case "$ROLE" in
  gate) extras="gate"; lockfile="$SRC/requirements-gate.lock" ;;
  tablet) extras=""; lockfile="$SRC/requirements.lock" ;;  # a tablet never gets OpenCV, numpy or dlib
esac
if [ "$NO_DEPS" = 1 ]; then
  say "installing $(basename "$WHEEL") without dependencies (--no-deps); role extras not installed: ${extras:-none}"
  "${pip[@]}" install -q "${nocompile[@]}" --no-deps --force-reinstall "$WHEEL"
else
  # Exactly the versions and files of the lock (scripts/lock.sh): two installs a month apart
  # run the same code, and a file that does not match its hash is refused.
  [ -f "$lockfile" ] || die "no $(basename "$lockfile") in $SRC (scripts/lock.sh makes it)"
  say "installing the locked dependencies ($(basename "$lockfile"), hashes required), extras: ${extras:-none}"
  "${pip[@]}" install -q "${nocompile[@]}" --require-hashes -r "$lockfile"
  "${pip[@]}" install -q "${nocompile[@]}" --no-deps --force-reinstall "$WHEEL"
  if [ "$ROLE" = gate ]; then
    # face_recognition declares "dlib", which compiles for a long time; dlib-bin ships the
    # same module prebuilt, so install it and the models, then face_recognition without deps.
    "${pip[@]}" install -q "${nocompile[@]}" --require-hashes -r "$SRC/requirements-face.lock"
    "${pip[@]}" install -q "${nocompile[@]}" --require-hashes --no-deps -r "$SRC/requirements-face-nodeps.lock"
  fi
fi
[ -x "$venv/bin/edge" ] || die "the wheel did not install $PREFIX/bin/edge"
[ -z "$ROOT" ] || [ "$ROOT" = / ] || relocate_venv
# The update launcher lives beside the release slots, never inside one (docs/updates.md).
install -m 0644 "$SRC/edge/update/boot.py" "$venv/boot.py"

# --- 2. the service user ------------------------------------------------------
if [ -n "$ROOT" ] || ! getent passwd "$SERVICE_USER" >/dev/null; then
  system useradd --system --user-group --no-create-home --home-dir /var/lib/edge \
    --shell /usr/sbin/nologin --comment "edge device daemon" "$SERVICE_USER"
fi
if [ "$ROLE" = tablet ]; then
  # config/tablet.example.toml gives the UI's socket to group tablet-ui; edge must be in it.
  if [ -n "$ROOT" ] || ! getent group tablet-ui >/dev/null; then
    system groupadd --system tablet-ui
  fi
  system usermod --append --groups tablet-ui "$SERVICE_USER"
fi

# --- 3. configuration and keys ------------------------------------------------
conf="$ROOT$CONF_DIR"
install -d -m 0750 "$conf"
install -d -m 0700 "$conf/keys"
system chown "root:$SERVICE_USER" "$CONF_DIR"
system chown "$SERVICE_USER:$SERVICE_USER" "$CONF_DIR/keys"
if [ -e "$conf/edge.toml" ]; then
  say "kept the existing $CONF_DIR/edge.toml (the new example is $SRC/config/$ROLE.example.toml)"
else
  # The skeleton keeps the device's private key in the 0700 key folder.
  sed "s#$CONF_DIR/device.key#$CONF_DIR/keys/device.key#" "$SRC/config/$ROLE.example.toml" > "$conf/edge.toml.tmp"
  chmod 0640 "$conf/edge.toml.tmp"
  mv "$conf/edge.toml.tmp" "$conf/edge.toml"
  system chown "root:$SERVICE_USER" "$CONF_DIR/edge.toml"
  say "wrote $CONF_DIR/edge.toml from config/$ROLE.example.toml: set device_id, site and the broker"
fi
if [ -n "$TUF_ROOT" ]; then
  install -m 0644 "$TUF_ROOT" "$conf/tuf-root.json"  # public metadata: the trust anchor, not a secret
  say "installed the TUF root as $CONF_DIR/tuf-root.json (set [update] trusted_root to it)"
fi
for key in "$conf"/keys/*; do
  [ -f "$key" ] || continue
  chmod 0600 "$key"  # keys copied in by hand as root must still be the daemon's alone
  system chown "$SERVICE_USER:$SERVICE_USER" "$CONF_DIR/keys/$(basename "$key")"
done

# --- 4. the unit ----------------------------------------------------------------
install -d -m 0755 "$ROOT$UNIT_DIR"
install -m 0644 "$SRC/systemd/edge.service" "$ROOT$UNIT_DIR/edge.service"
if [ -n "$TUF_ROOT" ]; then
  # Updates: the service starts through the launcher and may write its release slots.
  install -d -m 0755 "$ROOT$UNIT_DIR/edge.service.d"
  install -m 0644 "$SRC/systemd/edge-updates.conf" "$ROOT$UNIT_DIR/edge.service.d/updates.conf"
  system chown -R "$SERVICE_USER:$SERVICE_USER" "$PREFIX"
  say "updates on: $UNIT_DIR/edge.service.d/updates.conf runs $PREFIX/boot.py (writes $PREFIX/releases)"
fi
system systemctl daemon-reload
system systemctl enable edge.service

if [ -n "$ROOT" ]; then
  say "staged in $ROOT: copy it to / of the device (tar -C $ROOT -cf - . | ssh DEVICE tar -C / -xpf -),"
  say "      run the steps printed above there, then:"
fi
say "done. Next: put the device key in $CONF_DIR/keys/ (0600), edit $CONF_DIR/edge.toml,"
say "      check it with: $PREFIX/bin/edge --config $CONF_DIR/edge.toml config check"
say "      then: systemctl start edge && $PREFIX/bin/edge --config $CONF_DIR/edge.toml status"
