"""``footprint --role gate``: resident memory of a gate with biometrics, the daemon and its children.

A real ``edge run`` in the gate role with the feature set of
config/gate.example.toml on simulated devices: a local mosquitto (uplink), a
central key (trust), the x-ray dose policy, a heartbeat, a ``turnstile.serial``
controller simulated on a pty (rs485-bus, auto passage), a ``camera.face``
reading a folder of real photos from tests/data/faces (its face worker is a
child process), an ``xray.folder`` inbox, an ``xray.stream`` connected to a
local TCP port with its HMAC secret, and the gate policy's lane with the
example's flows. One staff member is enrolled (as central's gallery sync would,
with the encoder's weights converted as after the gate's first start); the
camera sees their second photo, the lane identifies them, the policy grants a
passage, and they leave: the camera then sees an empty lane.

Memory of the daemon and of every process it started (scripts/benchmarks/_memory.py:
RSS, PSS, USS, and the union: each resident page of the tree counted once) is
sampled twice a second from the start; the figures without ``_max`` are those
at the end of ``--seconds`` of idle lane after the decision, with the CPU used
in that window. In the same run, after the gate has stopped, the reference is
two bare Pythons that import only what each process cannot do without:
sqlite3 + paho-mqtt (the daemon) and numpy + cv2 + dlib (the face worker).
The goal (< 160 MB) was set for the process that holds the face stack; it is
reported for that process and for the whole gate. ``--python`` runs the gate on
another interpreter: a venv made from requirements-gate.lock and
requirements-face.lock measures the gate as installed, without the development
packages (rich and pygments, which structlog imports when they are there).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._memory import smaps_mb, snapshot, union_mb
from edge import signing
from edge.store import StoreReader
from edge.testing.broker import Mosquitto
from edge.testing.daemon import DaemonProcess

REPO = Path(__file__).resolve().parents[2]
FACES = REPO / "tests" / "data" / "faces"
STAFF = "obama"  # enrolled from obama_1.jpg; the camera sees obama_2.jpg
_BARE = {"daemon": "import sqlite3, threading, paho.mqtt.client, sys; print('ready', flush=True); sys.stdin.read()",
         "worker": "import numpy, cv2, dlib, sys; print('ready', flush=True); sys.stdin.read()"}
_WARMUP_S = 3.0
WORKER = "drivers.camera.worker"
GOAL_MB = 160.0


def _config(root: Path, broker: Mosquitto, tty: str, stream_port: int) -> dict:
    _, central_pub, _ = signing.generate_keypair(root / "keys", "central")
    secret = root / "keys" / "scanner1.secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    frames, inbox = root / "camera", root / "scanner-inbox"
    frames.mkdir()
    inbox.mkdir()
    shutil.copy(FACES / f"{STAFF}_2.jpg", frames / "0.jpg")
    grant = {"kind": "grant", "passes": 1, "timeout_s": 10}
    return {
        "device_id": "gate-bench-1", "site": "site-1", "role": "gate", "state_dir": str(root / "state"),
        "logging": {"level": "info", "format": "json"},
        "mqtt": {"brokers": [broker.uri]},
        "trust": {"central_keys": [str(central_pub)]},
        "xray": {"limit_usv": 250.0, "warning_usv": 200.0, "allowed_reasons": ["intelligence_led"]},
        "drivers": [
            {"name": "lane1-heartbeat", "kind": "sim.heartbeat", "rate": 1.0},
            {"name": "lane1-turnstile", "kind": "turnstile.serial", "codec": "rs485-bus", "port": tty,
             "baudrate": 9600, "state_file": str(root / "state" / "lane1-turnstile.json")},
            # Still photos never move: the motion liveness check would (rightly) refuse them.
            {"name": "lane1-face", "kind": "camera.face", "source": str(frames), "loop": True,
             "liveness": "none", "max_fps": 10},
            {"name": "scanner1", "kind": "xray.folder", "path": str(inbox), "settle_s": 1.0},
            {"name": "scanner1-events", "kind": "xray.stream", "url": f"socket://127.0.0.1:{stream_port}",
             "secret_file": str(secret)},
        ],
        "gate": {"hold_timeout_s": 600, "lanes": {"lane1": {
            "turnstile": "lane1-turnstile", "camera": "lane1-face", "camera_direction": "in",
            "scanners": ["scanner1", "scanner1-events"], "flows": [
                {"direction": "in", "role": "visitor", "steps": [
                    {"kind": "verify", "timeout_s": 30}, {"kind": "dose_check", "on_fail": "hold"},
                    {"kind": "xray", "timeout_s": 180, "on_fail": "hold"}, grant]},
                {"direction": "in", "role": "staff", "steps": [{"kind": "identify"}, grant]},
                {"direction": "out", "role": "any", "steps": [grant]}]}}},
    }


_ENROLL = """
import sys
import cv2
import numpy as np
from drivers.camera.gallery import Gallery, Subject
from drivers.camera.models import encoder_cache_dir
from drivers.camera.pipeline import Pipeline, PipelineConfig, read_image
state_dir, photo, subject, empty = sys.argv[1:]
pipeline = Pipeline(PipelineConfig(encoder_cache=encoder_cache_dir(state_dir)))
a = pipeline.analyse(read_image(photo), use_presence=False)
gallery = Gallery(state_dir)
gallery.upsert(Subject(subject, "staff", [a.encoding.astype("<f4").tobytes()]))
gallery.close()
cv2.imwrite(empty, np.full((480, 640, 3), 120, np.uint8))  # the empty lane, once they have left
"""


def _enroll(python: str, state_dir: Path, empty: Path) -> None:
    """The staff member, as central's gallery sync would have put them, and the encoder's converted
    weights in the gate's cache, as after its first start. In a child process: the benchmark itself
    never maps numpy, cv2 or dlib, which would lower the gate's PSS by sharing their pages."""
    subprocess.run([python, "-c", _ENROLL, str(state_dir), str(FACES / f"{STAFF}_1.jpg"),
                    f"staff-{STAFF}", str(empty)], check=True, cwd=REPO, stdout=subprocess.DEVNULL, timeout=300)


class _StreamPeer:
    """The scanner's event port: accepts the driver's connection and keeps it open, silent."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="xray-stream-peer").start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for c in self.conns:
            c.close()


def _wait_event(state_dir: Path, glob: str, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reader = StoreReader(state_dir, readonly=True)
        try:
            rows = reader.tail(1, type_glob=glob)
        finally:
            reader.close()
        if rows:
            return json.loads(rows[0][1])
        time.sleep(0.2)
    return None


class _Sampler(threading.Thread):
    """Memory of the daemon's process tree twice a second: the latest figures and the peaks."""

    def __init__(self, pid: int):
        super().__init__(daemon=True, name="footprint-sampler")
        self.pid, self.halt = pid, threading.Event()
        self.peak = {"rss_mb": 0.0, "pss_mb": 0.0, "union_mb": 0.0}
        self.process_rss_max: dict[str, float] = {}
        self.union_readable = True

    def sample(self) -> tuple[dict[str, dict], float | None]:
        snap = snapshot(self.pid)
        union = union_mb([int(key.rsplit(":", 1)[1]) for key in snap])
        self.union_readable = union is not None
        sums = {k: sum(p[k] for p in snap.values()) for k in ("rss_mb", "pss_mb")} | {"union_mb": union or 0.0}
        self.peak = {k: max(v, sums[k]) for k, v in self.peak.items()}
        for key, fig in snap.items():
            self.process_rss_max[key] = max(self.process_rss_max.get(key, 0.0), fig["rss_mb"])
        return snap, union

    def run(self) -> None:
        while not self.halt.wait(0.5):
            self.sample()


def _run_gate(root: Path, seconds: float, python: str) -> dict:
    from drivers.sim.turnstile import TurnstileSim

    broker = Mosquitto(root / "broker").start()
    turnstile = TurnstileSim("rs485-bus", root / "tty-lane1", baudrate=9600, auto_pass=True).start()
    peer = _StreamPeer()
    daemon = DaemonProcess(root / "daemon", _config(root, broker, turnstile.path, peer.port))
    daemon.command = [python, "-m", "edge"]  # the face worker runs on the daemon's interpreter
    sampler = None
    try:
        _enroll(python, daemon.state_dir, root / "empty.jpg")
        started = time.monotonic()
        daemon.start(timeout=120)
        sampler = _Sampler(daemon.proc.pid)
        sampler.start()
        decided = _wait_event(daemon.state_dir, "biometric.identified", 120)
        if decided is None:
            raise RuntimeError(f"the camera decided no face within 120 s:\n{daemon.log_tail()}")
        decided_s = time.monotonic() - started
        passage = _wait_event(daemon.state_dir, "gate.passage", 30)
        shutil.copy(root / "empty.jpg", root / "camera" / "next.tmp")
        os.replace(root / "camera" / "next.tmp", root / "camera" / "0.jpg")  # they have left the lane
        time.sleep(_WARMUP_S)
        first = snapshot(daemon.proc.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        sampler.halt.set()
        sampler.join()
        last, union = sampler.sample()
        window = time.monotonic() - t0
    finally:
        if sampler is not None:
            sampler.halt.set()
        exit_code = daemon.stop(timeout=30)
        peer.close()
        turnstile.stop()
        broker.stop()
    processes = {}
    for key, fig in last.items():
        cpu = fig["cpu_s"] - first.get(key, {"cpu_s": fig["cpu_s"]})["cpu_s"]
        processes[key] = {**{k: round(v, 1) for k, v in fig.items() if k.endswith("_mb")},
                          "rss_mb_max": round(sampler.process_rss_max[key], 1), "threads": fig["threads"],
                          "cpu_percent_of_one_core": round(cpu / window * 100, 2)}
    return {"first_decision_s": round(decided_s, 1), "decision": decided["payload"].get("subject_id"),
            "passage": passage is not None, "processes": processes, "union_mb": union,
            "sums": {k: sum(p[k] for p in last.values()) for k in ("rss_mb", "pss_mb", "uss_mb")},
            "peak": sampler.peak if sampler.union_readable else {**sampler.peak, "union_mb": None},
            "clean_stop": exit_code == 0}


def _bare_references(python: str) -> dict:
    """The two bare processes, started together once the gate has stopped, measured like the gate."""
    one_blas = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # as the driver starts its worker
    procs = {name: subprocess.Popen([python, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env={**os.environ, **(one_blas if name == "worker" else {})})
             for name, code in _BARE.items()}
    try:
        for p in procs.values():
            p.stdout.readline()  # "ready": imports done
        out = {name: smaps_mb(p.pid) for name, p in procs.items()}
        union = union_mb([p.pid for p in procs.values()])
    finally:
        for p in procs.values():
            p.communicate(b"")
    return {"processes": out, "union_mb": union}


def run(args) -> dict:
    load = [round(os.getloadavg()[0], 2)]
    with tempfile.TemporaryDirectory(prefix="edge-bench-footprint-gate-") as tmp:
        gate = _run_gate(Path(tmp), args.seconds, args.python)
    bare = _bare_references(args.python)
    load.append(round(os.getloadavg()[0], 2))
    sums, union, peak = gate["sums"], gate["union_mb"], gate["peak"]
    worker_max = max((p["rss_mb_max"] for key, p in gate["processes"].items() if key.startswith(WORKER)), default=None)
    bare_rss = sum(r["rss_mb"] for r in bare["processes"].values())
    # The whole gate is judged on the union where it can be read (root), else on PSS (which it
    # splits with any other process mapping the same files, so it reads lower).
    whole = peak["union_mb"] if peak["union_mb"] is not None else peak["pss_mb"]
    return {
        "role": "gate",
        "seconds": args.seconds,
        "python": args.python,
        **{k: gate[k] for k in ("first_decision_s", "decision", "passage", "processes")},
        "union_mb": _round(union), "rss_mb": _round(sums["rss_mb"]), "pss_mb": _round(sums["pss_mb"]),
        "uss_mb": _round(sums["uss_mb"]),
        "union_mb_max": _round(peak["union_mb"]), "rss_mb_max": _round(peak["rss_mb"]),
        "pss_mb_max": _round(peak["pss_mb"]), "face_worker_rss_mb_max": worker_max,
        "cpu_percent_of_one_core": round(sum(p["cpu_percent_of_one_core"] for p in gate["processes"].values()), 2),
        "bare": {name: {k: _round(v) for k, v in r.items()} for name, r in bare["processes"].items()},
        "bare_union_mb": _round(bare["union_mb"]), "bare_rss_mb": _round(bare_rss),
        "ratio": round(union / bare["union_mb"], 2) if union and bare["union_mb"] else round(sums["rss_mb"] / bare_rss, 2),
        "goal_mb": GOAL_MB,
        "goal_face_worker_ok": worker_max is not None and worker_max < GOAL_MB,
        "goal_whole_gate_ok": whole < GOAL_MB,
        "clean_stop": gate["clean_stop"],
        "load_avg_1m": load,
        "cpus": os.cpu_count(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
