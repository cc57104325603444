"""A/B slots on real files: offline install from a wheelhouse, atomic switch, the launcher's
rollback of an unconfirmed slot, pruning, and a real SIGKILL at every install step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edge.update import boot
from edge.update.slots import STEPS, InstallFailed, Slots
from tests._update_helpers import base_install, shim_running_this_edge, wheelhouse


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return wheelhouse(tmp_path_factory.mktemp("build"), "0.2.0", shim_running_this_edge())


@pytest.fixture
def root(tmp_path):
    base_install(tmp_path / "root")
    return tmp_path / "root"


def _run(exe, *args):
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def test_install_switch_confirm(root, archive):
    slots = Slots(root, python=sys.executable)
    slot = slots.install(archive, "0.2.0")
    assert (slot / "bin/edge").exists() and slots.record()["state"] == "installed"
    assert boot.decide(root)[1] is None  # installed but not switched: the base still runs
    slots.switch("0.2.0", deadline_s=60, max_attempts=3)
    exe, version = boot.decide(root)
    assert version == "0.2.0" and exe == root / "opt/edge/current/bin/edge"
    assert _run(exe, "--version").returncode == 0
    assert slots.record()["attempts"] == 1
    record = slots.confirm("0.2.0")
    assert record["state"] == "confirmed" and record["current"] == "0.2.0"
    assert boot.decide(root)[1] == "0.2.0" and slots.record()["state"] == "confirmed"


def test_a_bad_archive_leaves_the_running_slot(root, tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    slots = Slots(root, python=sys.executable)
    with pytest.raises(InstallFailed, match="not a readable wheelhouse"):
        slots.install(bad, "0.2.0")
    slots.recover()
    assert boot.decide(root)[1] is None and not list((root / "opt/edge/releases").iterdir())


def _fake_slot(slots, version):
    (slots.slot(version) / "bin").mkdir(parents=True)
    (slots.slot(version) / "bin/edge").write_text("")
    boot.mark_complete(slots.slot(version))


@pytest.mark.parametrize("why,record_change", [
    ("not confirmed after 3 start(s)", {}),
    ("not confirmed before the health-check deadline", {"deadline": 0}),
])
def test_launcher_rolls_back_an_unconfirmed_slot(root, why, record_change):
    slots = Slots(root, python=sys.executable)
    _fake_slot(slots, "0.2.0")
    slots.switch("0.2.0", deadline_s=60, max_attempts=3)
    boot.write_record(root, {**slots.record(), **record_change})
    starts = [boot.decide(root)[1] for _ in range(4)]
    record = slots.record()
    assert record["state"] == "rolled_back" and record["last_result"]["reason"] == why
    assert starts[-1] is None and boot.linked_version(root) is None  # back on the base install
    assert record["reported"] is False  # the old slot reports it when it starts


def test_at_most_two_previous_slots_are_kept(root):
    slots = Slots(root, python=sys.executable)
    for v in ("0.2.0", "0.3.0", "0.4.0", "0.5.0"):
        _fake_slot(slots, v)
        slots.switch(v, deadline_s=60, max_attempts=3)
        slots.confirm(v)
    assert sorted(p.name for p in slots.releases.iterdir()) == ["0.3.0", "0.4.0", "0.5.0"]
    assert slots.record()["history"] == ["0.4.0", "0.3.0"]
    slots.roll_back("test")  # rollback_to is the one before: 0.4.0
    assert boot.linked_version(root) == "0.4.0"


_KILLER = """
import os, signal, sys
from pathlib import Path
from edge.update.slots import Slots
root, archive, step = sys.argv[1:4]
def on_step(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
slots = Slots(root, python=sys.executable, on_step=on_step)
slots.install(Path(archive), "0.2.0")
slots.switch("0.2.0", deadline_s=60, max_attempts=3)
"""


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_leaves_a_bootable_slot_and_a_consistent_record(root, archive, step):
    done = subprocess.run([sys.executable, "-c", _KILLER, str(root), str(archive), step],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == -9, done.stderr
    slots = Slots(root, python=sys.executable)
    record = slots.recover()  # what the daemon does at start
    exe, version = boot.decide(root)
    assert _run(exe, "--version").returncode == 0, f"{exe} does not start after a kill at {step}"
    record = slots.record()
    if step == "switched":  # the link moved: the new slot starts on probation, counted
        assert version == "0.2.0" and record["state"] == "switched" and record["attempts"] == 1
    else:
        assert version is None, f"kill at {step} left {version} running"
        assert record["state"] in ("idle", "rolled_back", "installed"), record
        assert not [p for p in slots.releases.glob(".*")], "partial slot left behind"
    if step in ("begin", "extract", "venv", "pip", "activate"):
        assert step == "begin" or record["last_result"]["result"] == "interrupted"
    json.dumps(record)  # the record is whole JSON (read back above)


def test_install_after_an_interrupted_install_succeeds(root, archive):
    subprocess.run([sys.executable, "-c", _KILLER, str(root), str(archive), "pip"], timeout=240)
    slots = Slots(root, python=sys.executable)
    slots.recover()
    slots.install(archive, "0.2.0")
    slots.switch("0.2.0", deadline_s=60, max_attempts=3)
    assert boot.decide(root, now=time.time())[1] == "0.2.0"
    assert os.path.islink(root / "opt/edge/current")


def test_update_status_reads_the_record_without_a_daemon(root, tmp_path):
    slots = Slots(root, python=sys.executable)
    _fake_slot(slots, "0.2.0")
    slots.switch("0.2.0", deadline_s=60, max_attempts=3)
    slots.roll_back("health check failed: driver(s) not running: hb is degraded")
    config, anchor = tmp_path / "edge.toml", tmp_path / "tuf-root.json"
    anchor.write_text("{}")
    config.write_text(f'device_id = "d"\nsite = "s"\nrole = "tablet"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[update]\nmetadata_url = "http://127.0.0.1:9/metadata/"\ninstall_root = "{root}"\n'
                      f'trusted_root = "{anchor}"\n')
    run = [sys.executable, "-m", "edge", "--config", str(config), "update", "status"]
    text = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "slot:      base install" in text.stdout and "state:     rolled_back" in text.stdout
    assert "last:      rolled_back 0.2.0" in text.stdout and "hb is degraded" in text.stdout
    report = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert report["state"] == "rolled_back" and report["failed"] == ["0.2.0"] and report["slot"] is None


def test_launcher_starts_the_base_when_the_linked_slot_is_gone_or_the_record_unreadable(root):
    slots = Slots(root, python=sys.executable)
    _fake_slot(slots, "0.2.0")
    slots.switch("0.2.0", deadline_s=60, max_attempts=3)
    slots.confirm("0.2.0")
    (slots.slot("0.2.0") / "bin/edge").unlink()  # a disk error ate the slot
    assert boot.decide(root) == (root / "opt/edge/bin/edge", None)
    (root / "opt/edge/update-state.json").write_text("{not json")
    assert boot.decide(root)[0] == root / "opt/edge/bin/edge"
