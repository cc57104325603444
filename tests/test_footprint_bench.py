"""The footprint benchmark's gate mode: it measures a real gate, and counts shared pages once."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmarks import _memory

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="page frame numbers are readable by root only")
_IDLE = "import sys, sqlite3; print('ready', flush=True); sys.stdin.read()"


@root_only
def test_the_union_counts_a_page_shared_by_two_processes_once():
    procs = [subprocess.Popen([sys.executable, "-c", _IDLE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(2)]
    try:
        for p in procs:
            p.stdout.readline()
        alone = [_memory.union_mb([p.pid]) for p in procs]
        rss = [_memory.smaps_mb(p.pid)["rss_mb"] for p in procs]
        both = _memory.union_mb([p.pid for p in procs])
    finally:
        for p in procs:
            p.communicate(b"")
    assert alone[0] == pytest.approx(rss[0], abs=0.5)  # positive control: one process's union is its RSS
    # The interpreter and libc are mapped by both: counted once, well under the sum.
    assert max(alone) < both < sum(alone) - 2


@pytest.mark.slow
def test_gate_mode_measures_the_daemon_and_its_face_worker_after_a_decision():
    from benchmarks import footprint

    result = footprint.run(argparse.Namespace(role="gate", seconds=1.0, rate=1.0, no_broker=False,
                                              python=sys.executable))
    assert result["decision"] == "staff-obama" and result["passage"] and result["clean_stop"]
    labels = sorted(key.split(":")[0] for key in result["processes"])
    assert labels == ["drivers.camera.worker", "edge"]
    worker = next(p for key, p in result["processes"].items() if key.startswith("drivers.camera.worker"))
    # The face models are loaded: the worker holds far more than a bare numpy + cv2 + dlib.
    assert worker["rss_mb"] > result["bare"]["worker"]["rss_mb"] + 30
    assert result["pss_mb"] < result["rss_mb"]
    if os.geteuid() == 0:
        assert max(p["rss_mb"] for p in result["processes"].values()) < result["union_mb"] < result["rss_mb"]
        assert result["union_mb_max"] >= result["union_mb"]
