"""The public surface only grows on purpose: this test names it."""

from __future__ import annotations

import subprocess
import sys

import edge


def test_public_names_are_pinned():
    assert sorted(edge.__all__) == ["Driver", "DriverConfig", "DriverContext", "EdgeError", "Event", "__version__"]
    for name in edge.__all__:
        assert getattr(edge, name) is not None


def test_the_driver_seam_is_narrow():
    public = {n for n in vars(edge.Driver) if not n.startswith("_")}
    assert public == {"Config", "command_effects", "check_command", "run", "handle", "health", "close"}
    ctx = {n for n in vars(edge.DriverContext) if not n.startswith("_")}
    assert ctx == {"emit", "wait", "now", "health_changed", "service"}  # now: the daemon's trusted time


def test_importing_edge_pulls_in_nothing_heavy():
    code = "import sys, edge; print(' '.join(m for m in ('pydantic', 'numpy', 'cv2', 'dlib', 'paho') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
