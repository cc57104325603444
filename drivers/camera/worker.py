"""The face worker process: capture, pipeline and decisions, away from the daemon's GIL.

dlib holds Python's GIL for the whole of an encoding (tens of milliseconds),
which would stall every thread of the daemon. So the driver starts this
module as a child process (``python -m drivers.camera.worker``) and talks to
it with one JSON object per line:

  driver -> worker (stdin):  {"op": "start", "state_dir": ..., "config": {...}, "now": ...}  (first line)
                             {"op": "claim", "subject_id": ..., "booking_id": ..., "ttl_s": ..., "now": ...}
                             {"op": "status"}   {"op": "stop"}
  worker -> driver (stdout): {"op": "ready", "pid": ..., "load_ms": ..., "encoder": "numpy" | "dlib"}
                             {"op": "event", "type": ..., "payload": {...}, "priority": ...}
                             {"op": "status", ...}   {"op": "fatal", "error": ...}
                             {"op": "log", "level": ..., "event": ..., "fields": {...}}

``now`` is the daemon's trusted time (the driver's ``ctx.now()``, never before the
device's time floor): validity windows are judged by it (decide.DeviceClock), so a
clock set back makes no ended visit valid again. Frames never cross the pipe: the worker owns the camera too. Closing stdin
(the daemon died) stops the worker, so it is never left orphaned. The worker's
log lines go to the driver too, which writes them to the daemon's log: the
worker never imports structlog (drivers/camera/_log.py).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

_out_lock = threading.Lock()
_proto = sys.stdout  # replaced in main() by a private copy of fd 1


def send(msg: dict[str, Any]) -> None:
    line = json.dumps(msg, separators=(",", ":"), default=str)
    with _out_lock:
        _proto.write(line + "\n")
        _proto.flush()


def _private_stdout() -> None:
    """Keep fd 1 for the protocol only: anything a library prints goes to stderr instead."""
    global _proto
    _proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)


def _stdin_reader(inbox: queue.Queue) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            inbox.put(json.loads(line))
        except json.JSONDecodeError:
            send({"op": "fatal", "error": f"bad command line from the driver: {line[:80]!r}"})
    inbox.put({"op": "stop"})  # EOF: the driver is gone


class Worker:
    def __init__(self, state_dir: str, config: dict[str, Any], now: float | None = None):
        from drivers.camera.capture import open_source
        from drivers.camera.decide import Decider, DeviceClock, Thresholds
        from drivers.camera.gallery import Gallery
        from drivers.camera.lane import Lane, LaneConfig
        from drivers.camera.liveness import make_liveness
        from drivers.camera.models import encoder_cache_dir
        from drivers.camera.pipeline import Pipeline, PipelineConfig

        started = time.perf_counter()
        lane_cfg = LaneConfig.from_dict(config)
        pipe_cfg = PipelineConfig.from_dict({"encoder_cache": encoder_cache_dir(state_dir),
                                             **config.get("pipeline", {}),
                                             "allow_multiple": not lane_cfg.single_person})
        self.pipeline = Pipeline(pipe_cfg, keep_crops=lane_cfg.audit)
        gallery = Gallery(state_dir)
        self.clock = DeviceClock()  # the daemon's trusted time: told at start and with each claim
        self.clock.tell(now)
        decider = Decider(gallery, Thresholds.from_dict(config.get("thresholds", {})),
                          purge_grace_s=float(config.get("purge_grace_s", 3600.0)), clock=self.clock)
        decider.refresh()
        liveness = make_liveness(config.get("liveness", "motion"), config.get("liveness_options"))
        self.lane = Lane(self.pipeline, decider, liveness, lane_cfg, Path(state_dir) / "biometrics" / "audit")
        self.source = open_source(config["source"], loop=bool(config.get("loop", False)))
        self.interval = 1.0 / float(config.get("max_fps", 10.0))
        self.status_every = float(config.get("status_interval_s", 5.0))
        self.load_ms = round((time.perf_counter() - started) * 1000, 1)
        self.frames = 0

    def status(self) -> dict[str, Any]:
        import resource

        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"op": "status", "source": self.source.status(), "lane": self.lane.status(),
                "frames": self.frames, "peak_rss_mb": round(rss_mb, 1),
                "gallery": {"staff": len(self.lane.decider.staff),
                            "subjects": len(self.lane.decider.everyone), **self.lane.decider.sync}}

    def handle(self, cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "stop":
            return False
        if op == "claim":
            self.clock.tell(cmd.get("now"))
            self.lane.claim(str(cmd["subject_id"]), cmd.get("booking_id"), cmd.get("ttl_s"), cmd.get("entry"))
        elif op == "forget_entry":
            if cmd.get("all"):
                self.lane.entries.forget_all()
            else:
                self.lane.entries.forget(str(cmd.get("key")))
            send(self.status())  # the driver (and `edge status`) see the count drop at once
        elif op == "status":
            send(self.status())
        return True

    def run(self, inbox: queue.Queue) -> None:
        send({"op": "ready", "pid": os.getpid(), "load_ms": self.load_ms, "encoder": self.pipeline.encoder_name})
        next_frame = next_status = time.monotonic()
        while True:
            try:
                while True:
                    if not self.handle(inbox.get_nowait()):
                        return
            except queue.Empty:
                pass
            now = time.monotonic()
            if now >= next_status:
                send(self.status())
                self.lane.purge_audit()
                next_status = now + self.status_every
            if now < next_frame:  # the frame-rate cap
                time.sleep(min(next_frame - now, 0.05))
                continue
            frame = self.source.read(timeout=0.2)
            if frame is None:
                if self.source.ended:
                    self._idle(inbox)
                    return
                continue
            next_frame = time.monotonic() + self.interval
            self.frames += 1
            kept = len(self.lane.entries)
            for decision in self.lane.process(frame):
                send({"op": "event", "type": decision.type, "payload": decision.payload,
                      "priority": decision.priority})
            if len(self.lane.entries) != kept:
                send(self.status())  # entry faces held: visible in the driver's status at once

    def _idle(self, inbox: queue.Queue) -> None:
        """The source played to its end (a folder or file): report it and wait for stop."""
        send(self.status())
        while True:
            cmd = inbox.get()
            if not self.handle(cmd):
                return


def _log_to_driver(level: str, event: str, fields: dict[str, Any]) -> None:
    send({"op": "log", "level": level, "event": event, "fields": fields})


def main() -> int:
    from drivers.camera._log import set_sink

    _private_stdout()
    set_sink(_log_to_driver)
    inbox: queue.Queue = queue.Queue()
    first = sys.stdin.readline()
    try:
        start = json.loads(first)
        worker = Worker(start["state_dir"], start["config"], start.get("now"))
    except Exception as exc:  # report why we cannot start; the driver raises it as a fault
        send({"op": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    threading.Thread(target=_stdin_reader, args=(inbox,), daemon=True, name="stdin").start()
    try:
        worker.run(inbox)
    except Exception as exc:  # process boundary: tell the driver why, keep the traceback on stderr
        send({"op": "fatal", "error": f"{type(exc).__name__}: {exc}"[:300]})
        raise
    finally:
        worker.source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
