"""scripts/install.sh staged into a temporary root: the real file layout and permissions.

Offline and quick: the wheel is built once from this tree and installed without its
dependencies into a venv made without pip (``--no-deps --no-venv-pip``); everything
else (venv under /opt/edge, unit, config skeleton, key folder) is what a device gets.
"""

from __future__ import annotations

import filecmp
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
