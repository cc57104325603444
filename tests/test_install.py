"""scripts/install.sh staged into a temporary root: the real file layout and permissions.

Offline and quick: the wheel is built once from this tree and installed without its
dependencies into a venv made without pip (``--no-deps --no-venv-pip``); everything
else (venv under /opt/edge, unit, config skeleton, key folder) is what a device gets.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge import secrets
from edge.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "scripts" / "install.sh"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), "--python", sys.executable,
                           "--no-deps", "--no-venv-pip", *args],
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=240)
    return next(out.glob("edge-*.whl"))


@pytest.fixture(scope="module")
def tablet(tmp_path_factory, wheel) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("device")
    done = _install(root, "--role", "tablet", "--wheel", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    return root, done


def test_layout_and_permissions(tablet):
    root, _ = tablet
    conf = root / "etc/edge"
    assert _mode(conf) == 0o750
    assert _mode(conf / "keys") == 0o700
    assert _mode(conf / "edge.toml") == 0o640
    unit = root / "etc/systemd/system/edge.service"
    assert _mode(unit) == 0o644 and filecmp.cmp(unit, ROOT / "systemd/edge.service", shallow=False)
    edge = root / "opt/edge/bin/edge"
    assert edge.is_file() and _mode(edge) & 0o111
    assert filecmp.cmp(root / "opt/edge/boot.py", ROOT / "edge/update/boot.py", shallow=False)
    assert not (root / "etc/systemd/system/edge.service.d").exists()  # no update anchor, no drop-in


def test_the_venv_runs_the_installed_copy_not_this_tree(tablet):
    root, _ = tablet
    done = subprocess.run([str(root / "opt/edge/bin/python"), "-c", "import edge; print(edge.__file__)"],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(root / "opt/edge/lib")


def test_config_skeleton_is_the_role_example_with_keys_in_the_key_folder(tablet):
    root, _ = tablet
    text = (root / "etc/edge/edge.toml").read_text()
    example = (ROOT / "config/tablet.example.toml").read_text()
    assert text == example.replace("/etc/edge/device.key", "/etc/edge/keys/device.key")
    assert 'role = "tablet"' in text
    assert load_settings(root / "etc/edge/edge.toml", check_files=False).role == "tablet"


def test_unit_exec_start_is_what_the_install_put_there(tablet):
    """The unit's ExecStart, resolved inside the staged root, is the installed entry point."""
    root, _ = tablet
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify --root needs the stock targets the unit refers to inside the root.
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    for target in Path("/lib/systemd/system").glob("*.target"):
        shutil.copy(target, units / target.name)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           "/etc/systemd/system/edge.service"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
    # The credential lines parsed without a warning (verify names an invalid credential id),
    # and nothing has to be provisioned for the installed unit: no credential store in the root.
    unit = (root / "etc/systemd/system/edge.service").read_text()
    assert unit.count("\nLoadCredentialEncrypted=") == len(secrets.NAMES) and not (root / "etc/credstore.encrypted").exists()


def test_privileged_steps_are_printed_not_run_under_root(tablet):
    _, done = tablet
    out = done.stdout
    for step in ("useradd --system", "groupadd --system tablet-ui", "chown edge:edge /etc/edge/keys",
                 "systemctl enable edge.service"):
        assert f"would run (skipped under --root): {step}" in out, out
    assert "role extras not installed: none" in out  # a tablet gets the core only


def test_reinstall_keeps_the_config_and_tightens_keys(tablet, wheel):
    root, _ = tablet
    config = root / "etc/edge/edge.toml"
    config.write_text(config.read_text().replace("tablet-a-101", "tablet-b-202"))
    key = root / "etc/edge/keys/device.key"
    key.write_text("not a real key\n")
    key.chmod(0o644)
    done = _install(root, "--role", "tablet", "--wheel", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tablet-b-202" in config.read_text()
    assert "kept the existing /etc/edge/edge.toml" in done.stdout
    assert _mode(key) == 0o600
    assert "would run (skipped under --root): chown edge:edge /etc/edge/keys/device.key" in done.stdout


def test_the_gate_extras_are_chosen_for_a_gate_only(tmp_path, wheel):
    done = _install(tmp_path, "--role", "gate", "--wheel", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "role extras not installed: gate" in done.stdout
    assert 'role = "gate"' in (tmp_path / "etc/edge/edge.toml").read_text()
    # What keeps OpenCV, numpy and dlib off a tablet: they are gate-only in the wheel.
    with zipfile.ZipFile(wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in whl.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    heavy = [r for r in requires if any(h in r.lower() for h in ("opencv", "numpy", "dlib", "face"))]
    assert heavy and all('extra == "gate"' in r for r in heavy), requires


@pytest.mark.parametrize("args, message", [
    ((), "--role is required"),
    (("--role", "server"), "--role must be gate or tablet"),
    (("--role", "gate", "--bogus"), "unknown option '--bogus'"),
    (("--role", "gate", "--wheel", "/nonexistent/edge.whl"), "does not exist"),
])
def test_bad_invocations_say_what_is_wrong(tmp_path, args, message):
    done = _install(tmp_path, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "opt").exists()


DEVICE_CONFIG = """device_id = "tablet-staged-1"
site = "hmp-staged"
role = "tablet"
state_dir = "/var/lib/edge"
[mqtt]
brokers = ["mqtt://127.0.0.1:9"]
"""

# Runs inside the device's root: the daemon from /opt/edge, `edge status` answering from it.
ON_DEVICE = """set -e
/opt/edge/bin/python -c 'import edge, sys; print(sys.prefix, edge.__file__)'
/opt/edge/bin/edge --config /etc/edge/edge.toml config check
/opt/edge/bin/edge --config /etc/edge/edge.toml run >/var/lib/edge-run.log 2>&1 &
for _ in $(seq 300); do
  /opt/edge/bin/edge --config /etc/edge/edge.toml status --json >/status.json 2>/dev/null && break
  sleep 0.1
done
kill -TERM $! && wait $! || true
cat /status.json
"""


def _device_root(staged: Path, device: Path) -> str:
    """A shell script that makes ``device`` a device's / in a private mount namespace: the staged
    tree copied in, the system and this machine's base Python bound at their own paths."""
    shutil.copytree(staged, device, symlinks=True)
    binds = ["/usr", "/dev"]
    base = Path(sys.base_prefix).resolve()
    if not base.is_relative_to("/usr"):
        binds.append(str(base))  # e.g. a pyenv Python: the device needs it at the same path
    for top in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / top
        if host.is_symlink():
            (device / top).symlink_to(os.readlink(host))
        elif host.is_dir():
            binds.append(str(host))
    lines = []
    for path in binds:
        (device / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        lines.append(f"mount --rbind {path} {device}{path}")
    (device / "tmp").mkdir(mode=0o1777, exist_ok=True)
    (device / "var/lib/edge").mkdir(parents=True)
    (device / "etc/edge/edge.toml").write_text(DEVICE_CONFIG)
    (device / "on-device.sh").write_text(ON_DEVICE)
    return "\n".join([*lines, f"exec chroot {device} /bin/sh /on-device.sh"])


def test_the_staged_tree_names_its_final_paths_only(tablet):
    """Scripts, activate files, pyvenv.cfg and bytecode name /opt/edge, never the staging folder."""
    root, done = tablet
    staged = [p for p in (root / "opt/edge").rglob("*") if p.is_file() and not p.is_symlink()
              and str(root).encode() in p.read_bytes()]
    assert not staged, staged
    assert (root / "opt/edge/bin/edge").read_text().startswith("#!/opt/edge/bin/python\n")
    assert "VIRTUAL_ENV=\"/opt/edge\"" in (root / "opt/edge/bin/activate").read_text()
    assert f"staged in {root}: copy it to / of the device" in done.stdout
    assert "staged for /opt/edge: the device needs " in done.stdout
    assert "/etc/edge/edge.toml config check" in done.stdout and f"{root}/etc" not in done.stdout


def test_the_staged_tree_runs_at_its_final_paths(wheel, tmp_path):
    """Copied to / of a device (a chroot in a private mount namespace), the venv with its
    dependencies, its scripts and the daemon run from /opt/edge."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("chroot") is None:
        pytest.skip("needs root with unshare and chroot to mount the staged tree at /")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here (no CAP_SYS_ADMIN in this container)")
    root = tmp_path / "staged"
    done = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--python", sys.executable,
                           "--no-venv-pip", "--role", "tablet", "--wheel", str(wheel)],
                          capture_output=True, text=True, timeout=240)
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        pytest.skip("the tablet's dependencies cannot be downloaded here: " + done.stderr[-300:])
    assert done.returncode == 0, done.stdout + done.stderr
    script = _device_root(root, tmp_path / "device")
    run = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    where, check, *rest = run.stdout.splitlines()
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert where == f"/opt/edge /opt/edge/lib/{version}/site-packages/edge/__init__.py", run.stdout
    assert check.startswith("/etc/edge/edge.toml: ok (tablet tablet-staged-1"), run.stdout
    status = json.loads("\n".join(rest))
    assert status["device_id"] == "tablet-staged-1" and status["daemon"]["running"], status


def test_tuf_root_is_shipped_as_the_update_anchor(tmp_path, wheel):
    from edge.update.repo import ReleaseRepo

    repo = ReleaseRepo(tmp_path / "central")
    repo.init(["tablet.all"])
    anchor = repo.meta_dir / "1.root.json"
    done = _install(tmp_path / "device", "--role", "tablet", "--wheel", str(wheel), "--tuf-root", str(anchor))
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = tmp_path / "device/etc/edge/tuf-root.json"
    assert shipped.read_bytes() == anchor.read_bytes() and _mode(shipped) == 0o644
    # The service then starts through the launcher, which may write its slots; without an
    # update anchor the unit stays as hardened as shipped.
    dropin = (tmp_path / "device/etc/systemd/system/edge.service.d/updates.conf").read_text()
    assert "ExecStart=/opt/edge/bin/python /opt/edge/boot.py --root / --" in dropin
    assert "ReadWritePaths=/opt/edge" in dropin
    assert "chown -R edge:edge /opt/edge" in done.stdout
    missing = _install(tmp_path / "other", "--role", "tablet", "--wheel", str(wheel), "--tuf-root", "/nonexistent")
    assert missing.returncode == 2 and "--tuf-root" in missing.stderr
