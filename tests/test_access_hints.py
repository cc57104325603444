"""An operator refused by a file's permissions is told which folder or file stops them, its group,
and what fixes it (`usermod -aG GROUP USER`, or the owner's account), checked as uid ``nobody``
against the kernel's own permission checks."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

import edge.access

NOBODY = 65534
_SYSTEM_PYTHON = "/usr/bin/python3"


def _hint_as_nobody(folder: Path, name: str, need: str, groups=()) -> str:
    """denied_hint(folder/name) computed by uid nobody, which reaches ``folder`` through an fd
    (the test's own tmp folders above it are closed to others)."""
    if os.geteuid() != 0 or not os.access(_SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root (to become nobody) and the system's python3")
    code = Path(edge.access.__file__).read_text() + (
        f"\nimport sys\nprint(denied_hint(f'/proc/self/fd/{{sys.argv[1]}}/{name}', os.{need}))\n")
    dirfd = os.open(folder, os.O_PATH)
    try:
        done = subprocess.run([_SYSTEM_PYTHON, "-I", "-c", code, str(dirfd)], user=NOBODY, group=NOBODY,
                              extra_groups=list(groups), pass_fds=(dirfd,), cwd="/", capture_output=True,
                              text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    finally:
        os.close(dirfd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def state(tmp_path):
    """A state folder as the unit makes it (0710, the daemon's group) with its 0660 control socket."""
    folder = tmp_path / "state"
    folder.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "control.sock"))
    os.chown(folder, 0, 0)
    os.chmod(folder, 0o710)
    os.chmod(folder / "control.sock", 0o660)
    return folder


def test_a_folder_closed_to_the_operator_names_its_group_and_the_usermod(state):
    hint = _hint_as_nobody(state, "control.sock", "W_OK")
    assert hint.endswith("(owner root, group root, mode 0710): nobody is not in group root; an administrator "
                         "runs `usermod -aG root nobody`, then nobody logs in again"), hint


def test_a_socket_of_another_group_names_that_group(state):
    os.chmod(state, 0o711)
    hint = _hint_as_nobody(state, "control.sock", "W_OK")
    assert hint.endswith("/control.sock (owner root, group root, mode 0660): nobody is not in group root; "
                         "an administrator runs `usermod -aG root nobody`, then nobody logs in again"), hint


def test_a_file_only_its_owner_may_use_says_whose_account_to_use(state):
    os.chmod(state, 0o711)
    os.chmod(state / "control.sock", 0o600)
    hint = _hint_as_nobody(state, "control.sock", "W_OK")
    assert hint.endswith("/control.sock (owner root, group root, mode 0600) lets only root in: run this as root "
                         "(sudo -u root ...)"), hint


def test_a_member_of_the_group_gets_no_hint(state):
    """The positive control: in the group, nothing stops the operator and nothing is claimed."""
    assert _hint_as_nobody(state, "control.sock", "W_OK", groups=[0]) == "None"
