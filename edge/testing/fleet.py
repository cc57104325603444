"""A fleet of simulated devices built from the real store and uplink, packed into few processes.

Each simulated device is what ``edge run`` builds for its outbound path: its own
state folder, a real ``Store`` (SQLite, fsync'd appends, seqs, outbox), a real
``MqttLink`` with its uplink (acked on PUBACK), device state (birth, last will)
and the link's own jittered reconnect back-off. Only the drivers are replaced
by a load thread that appends a mix of events. A worker process hosts many
devices; the ``Fleet`` controller starts workers and reads their status files.

    python -m edge.testing.fleet worker SPEC_JSON    (started by Fleet, not by hand)
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge.testing.wait import wait_for

MAX_PER_PROCESS = 60
_MIX = (("turnstile.passage", "normal", 0.60), ("sim.heartbeat", "telemetry", 0.35),
        ("gate.alarm_test", "alarm", 0.05))


def _counting_link_class():
    from edge.mqtt.link import MqttLink

    class CountingLink(MqttLink):
        """The real link; each connection attempt's wall time is recorded for the storm figures."""

        attempts: list[float]

        def _session(self, broker):
            self.attempts.append(time.time())
            return super()._session(broker)

    return CountingLink


class _Device:
    def __init__(self, name: str, spec: dict, link_class):
        from edge.config import Settings
        from edge.store import Store

        mqtt = {"brokers": [spec["broker"]], "keepalive_s": 30}
        if spec.get("backoff_min_s"):
            mqtt["backoff_min_s"] = spec["backoff_min_s"]
        if spec.get("backoff_max_s"):
            mqtt["backoff_max_s"] = spec["backoff_max_s"]
        self.settings = Settings(device_id=name, site=spec["site"], role="tablet",
                                 state_dir=Path(spec["state_root"]) / name, mqtt=mqtt)
        self.name = name
        self.store = Store(self.settings.state_dir, device=name, site=spec["site"], settings=self.settings.store)
        self.link = link_class(self.settings, self.store)
        self.link.attempts = []
        self.appended = 0

    def emit(self, n: int, rng: random.Random) -> None:
        from edge.events import make_event

        events = []
        for type_, priority, _share in rng.choices(_MIX, weights=[m[2] for m in _MIX], k=n):
            events.append(make_event(device=self.name, site=self.settings.site, type=type_, source="fleet",
                                     priority=priority, payload={"n": self.appended + len(events)}))
        self.store.append_many(events)
        self.appended += n


def worker(spec: dict) -> None:
    """Host ``spec['devices']``; load on until stdin says ``pause``; exit on ``quit`` or EOF."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from edge.logs import configure

    configure("error", "console", stream=sys.stderr)
    link_class = _counting_link_class()
    devices = [_Device(name, spec, link_class) for name in spec["devices"]]
    for d in devices:
        d.link.start()
    loading = threading.Event()
    loading.set()
    quit_ = threading.Event()
    emitting = threading.Lock()  # held around each append: "pause" returns only between appends
    threading.Thread(target=_load, args=(devices, spec, loading, quit_, emitting), daemon=True).start()
    threading.Thread(target=_status_loop, args=(devices, spec["status_file"], loading, quit_), daemon=True).start()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "pause":
            loading.clear()
            with emitting:
                pass
            _write_status(devices, spec["status_file"], loading)
        elif cmd == "resume":
            loading.set()
        elif cmd == "quit":
            break
    quit_.set()
    for d in devices:
        d.link.stop(timeout=2.0)
        d.store.close()
    _write_status(devices, spec["status_file"], loading)


def _load(devices: list[_Device], spec: dict, loading: threading.Event, quit_: threading.Event,
          emitting: threading.Lock) -> None:
    """Every device appends ``batch`` events every ``interval_s``, spread over the interval."""
    rng = random.Random(os.getpid())
    interval, batch = spec["interval_s"], spec["batch"]
    while not quit_.is_set():
        started = time.monotonic()
        for i, d in enumerate(devices):
            if not loading.wait(0.5) or quit_.is_set():
                break
            with emitting:
                if loading.is_set():
                    d.emit(batch, rng)
            due = started + interval * (i + 1) / len(devices)
            delay = due - time.monotonic()
            if delay > 0:
                quit_.wait(delay)


def _status_loop(devices, path: str, loading: threading.Event, quit_: threading.Event) -> None:
    while not quit_.wait(0.5):
        _write_status(devices, path, loading)


_status_lock = threading.Lock()  # the status loop and the "pause" handler both write the file


def _write_status(devices: list[_Device], path: str, loading: threading.Event) -> None:
    with _status_lock:
        _write_status_locked(devices, path, loading)


def _write_status_locked(devices: list[_Device], path: str, loading: threading.Event) -> None:
    doc = {"at": time.time(), "loading": loading.is_set(),
           "connected": sum(1 for d in devices if d.link.connected),
           "appended": {d.name: d.appended for d in devices},
           "acked": sum(d.link.uplink.acker.committed for d in devices),
           "attempts": [t for d in devices for t in d.link.attempts]}
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


class Fleet:
    """N devices in P worker processes, all pointed at ``broker``."""

    def __init__(self, workdir: Path, broker: str, devices: int, *, processes: int = 4, site: str = "fleet",
                 interval_s: float = 2.0, batch: int = 2, backoff_min_s: float | None = None,
                 backoff_max_s: float | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.site = site
        self.names = [f"dev-{i:04d}" for i in range(devices)]
        self.procs: list[subprocess.Popen] = []
        self.status_files: list[Path] = []
        self.specs = []
        # paho's network loop uses select(), which cannot watch a descriptor numbered 1024 or
        # more, and each device holds about 13 (SQLite files, lock, socket): so at most
        # MAX_PER_PROCESS devices share a process, whatever ``processes`` asks for.
        processes = max(processes, -(-devices // MAX_PER_PROCESS))
        chunk = -(-devices // processes)
        for p in range(processes):
            names = self.names[p * chunk:(p + 1) * chunk]
            if names:
                self.specs.append({"devices": names, "site": site, "broker": broker, "batch": batch,
                                   "interval_s": interval_s, "state_root": str(self.workdir / "devices"),
                                   "status_file": str(self.workdir / f"worker-{p}.json"),
                                   "backoff_min_s": backoff_min_s, "backoff_max_s": backoff_max_s})

    def start(self) -> Fleet:
        for p, spec in enumerate(self.specs):
            log = open(self.workdir / f"worker-{p}.log", "ab")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "edge.testing.fleet", "worker", json.dumps(spec)],
                                               stdin=subprocess.PIPE, stdout=log, stderr=log))
            self.status_files.append(Path(spec["status_file"]))
        return self

    def _tell(self, cmd: str) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.stdin.write(cmd.encode() + b"\n")
                proc.stdin.flush()

    def pause(self, timeout: float = 30.0) -> None:
        """Stop the load; returns once every worker reported that no append is in progress."""
        self._tell("pause")

        def paused() -> bool:
            self._check_alive()
            return all(self._doc(p).get("loading") is False for p in self.status_files)

        wait_for(paused, timeout, "the fleet workers to pause", interval=0.1)

    @staticmethod
    def _doc(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def resume(self) -> None:
        self._tell("resume")

    def status(self) -> dict:
        out = {"connected": 0, "acked": 0, "appended": {}, "attempts": [], "workers": 0, "at": 0.0}
        for path in self.status_files:
            try:
                doc = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            out["workers"] += 1
            out["connected"] += doc["connected"]
            out["acked"] += doc["acked"]
            out["appended"].update(doc["appended"])
            out["attempts"] += doc["attempts"]
            out["at"] = max(out["at"], doc["at"])
        out["sent"] = sum(out["appended"].values())
        return out

    def fresh_status(self, after: float, timeout: float = 30.0) -> dict:
        """A status every worker wrote after ``after`` (wall time)."""
        def fresh() -> dict | None:
            self._check_alive()
            stamps = [self._doc(path).get("at") for path in self.status_files]
            return self.status() if all(a is not None and a > after for a in stamps) else None

        return wait_for(fresh, timeout, "every fleet worker to report", interval=0.1)

    def _check_alive(self) -> None:
        for p, proc in enumerate(self.procs):
            if proc.poll() is not None:
                log = (self.workdir / f"worker-{p}.log").read_text()[-2000:]
                raise AssertionError(f"fleet worker {p} exited {proc.returncode}: {log}")

    def stop(self, timeout: float = 60.0) -> None:
        self._tell("quit")
        for proc in self.procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "worker":
        sys.exit("usage: python -m edge.testing.fleet worker SPEC_JSON (started by edge.testing.fleet.Fleet)")
    worker(json.loads(sys.argv[2]))
