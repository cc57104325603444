"""``camera.face``: the driver thread that runs the face worker and turns its results into events.

The thread never touches dlib or a frame: it starts ``drivers.camera.worker``
as a child process, forwards commands (a presented booking for 1:1
verification), and emits what the worker decides. If the worker dies the
driver raises, the supervisor records ``system.driver_fault`` and restarts it
with backoff, and a fresh worker starts.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.camera._log import LEVELS
from edge.driver import Driver, DriverConfig, parse_command_args
from edge.errors import CommandError, DriverError, StoreFull

_STARTUP_TIMEOUT_S = 60.0
_STATUS_WAIT_S = 2.0


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdOptions(_Options):
    verify: float = Field(default=0.5, gt=0, le=0.5, description="1:1 distance threshold; 0.5 or stricter.")
    identify: float = Field(default=0.45, gt=0, le=0.5, description="1:N threshold for up to identify_base_size staff.")
    identify_floor: float = Field(default=0.35, gt=0, le=0.5, description="The 1:N threshold never "
                                  "tightens below this, however big the gallery grows.")
    identify_step: float = Field(default=0.03, ge=0, le=0.2, description="Tightening per tenfold gallery growth.")
    identify_base_size: int = Field(default=100, ge=1, description="Gallery size up to which `identify` "
                                    "applies as it is; beyond, it tightens by identify_step.")
    min_margin: float = Field(default=0.08, ge=0, le=0.5, description="Distance gap to the runner-up subject.")


class PipelineOptions(_Options):
    detect_width: int = Field(default=640, ge=160, le=4096, description="HOG runs on a frame this wide.")
    quick_detect_width: int = Field(default=0, ge=0, le=4096, description=(
        "Opt-in speed-up (about 3 ms at 720p): HOG runs at this width first, on detect_width only when it "
        "finds no face. It makes the two-faces alarm less sensitive (a second face counts from about "
        "155 px instead of 116 px at 720p), so it is off by default; 480 is the measured setting."))
    detect_threads: int = Field(default=2, ge=1, le=2, description=(
        "2: HOG's pyramid is scanned in two halves on two threads (the same faces as one scan, about "
        "7 ms sooner at 720p when a second core is free); 1: one scan. Never more than the CPUs the "
        "worker may use."))
    upsample: int = Field(default=0, ge=0, le=2, description="HOG upsampling passes: each finds smaller "
                          "faces on four times the pixels.")
    min_face_px: int = Field(default=80, ge=20, description="Narrowest face (px at full resolution) a "
                             "lane decides on or a photo is enrolled from.")
    min_still_face_px: int = Field(default=40, ge=20, description=(
        "Face width a still photo is decided on (verify, identify, calibrate); enrollment needs min_face_px."))
    second_face_px: int = Field(default=40, ge=10, description="A second face at least this wide (px) "
                                "counts as another person.")
    min_sharpness: float = Field(default=30.0, ge=0, description="Least sharpness (variance of the "
                                 "Laplacian) of a face decided on.")
    max_yaw: float = Field(default=0.35, gt=0, le=1, description="Largest head turn: the nose's offset "
                           "from the eyes' midpoint, in eye distances.")
    max_cut_off: float = Field(default=0.10, ge=0, le=1, description="Share of the face allowed outside the frame.")
    presence_delta: float = Field(default=3.0, ge=0, description="Mean grey-level change of a thumbnail "
                                  "that counts as movement; a frame without is not analysed further.")
    encoder: Literal["auto", "numpy", "dlib"] = Field(
        default="auto", description="ResNet engine: numpy on dlib's weights (verified, falls back to dlib) or dlib's own.")
    encoder_front: bool = Field(default=False, description=(
        "Opt-in: the numpy engine runs the network's first blocks in OpenCV's DNN module (the same "
        "descriptors, checked against dlib's at start): about 2 ms less CPU a face, about 10 MB more "
        "resident in the face worker."))
    budgets_ms: dict[Literal["presence", "detect", "landmarks", "quality", "encode", "search"], float] = Field(
        default_factory=dict, description="Per-stage time budgets; decisions list the stages over budget.")


class FaceCameraConfig(DriverConfig):
    source: str = Field(description="/dev/videoN, rtsp://…, http://…, a video file, or a folder of images.")
    loop: bool = Field(default=False, description="Replay a file or folder when it ends (demos).")
    max_fps: float = Field(default=10.0, gt=0, le=60, description="Frames analysed per second at most.")
    mode: Literal["both", "verify", "identify"] = Field(
        default="both", description="verify: 1:1 against a presented booking only; identify: 1:N staff "
                                    "only; both.")
    single_person: bool = Field(default=True, description="A second face raises biometric.multiple_faces.")
    liveness: str = Field(default="motion", description="motion; package.module:Class (a check of your "
                          "own); or none, DANGEROUS: a photo held up to the camera can pass.")
    liveness_options: dict[str, Any] = Field(default_factory=dict,
                                             description="Keyword arguments of the liveness check.")
    thresholds: ThresholdOptions = Field(default_factory=ThresholdOptions)
    pipeline: PipelineOptions = Field(default_factory=PipelineOptions)
    rearm_frames: int = Field(default=2, ge=1, description="Frames without a face that end an approach.")
    quality_frames: int = Field(default=5, ge=1, description="Poor frames in one approach before it "
                                "reports biometric.quality_low (once).")
    claim_ttl_s: float = Field(default=60.0, gt=0, description="A presented booking waits this long for "
                                                               "the face to verify.")
    purge_grace_s: float = Field(default=3600.0, ge=0, description="Expired templates are deleted this long after their window.")
    audit: bool = Field(default=False, description="Keep an encrypted face crop of failed decisions.")
    audit_retention_days: float = Field(default=30.0, gt=0, description="Audit crops are deleted after this.")
    state_dir: Path | None = Field(default=None, description="Defaults to the daemon's state_dir.")

    @field_validator("liveness")
    @classmethod
    def _liveness(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if value not in ("motion", "none") and not (module and attr.isidentifier()):
            raise ValueError("expected 'motion', 'none' or 'package.module:ClassName'")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty; expected a device, stream URL, video file or folder")
        return value


class _VerifyArgs(_Options):
    subject_id: str = Field(min_length=1, max_length=128, description="The subject of the presented booking.")
    booking_id: str | None = Field(default=None, max_length=128, description="The booking; the key of "
                                   "the entry face (the subject when none).")
    ttl_s: float | None = Field(default=None, gt=0, le=3600, description="How long the claim waits "
                                "for the face (default claim_ttl_s).")
    entry: Literal["keep", "compare"] | None = Field(default=None, description=(
        "keep: a visitor entering (the verified face is kept for the exit); compare: a visitor "
        "leaving (compared with the face kept at entry, not the gallery)."))


class _ForgetArgs(_Options):
    key: str | None = Field(default=None, max_length=128, description="The booking id whose entry face goes.")
    all: bool = Field(default=False, description="Every entry face (the end of a visiting session).")


#: What each command accepts; handle() and the check before a request is held share these.
_ARGS: dict[str, type[BaseModel]] = {"verify": _VerifyArgs, "forget_entry": _ForgetArgs, "status": _Options}


class FaceCameraDriver(Driver):
    """Runs the face worker process and emits its decisions as ``biometric.*`` events."""

    Config = FaceCameraConfig
    # verify only starts a check; forget_entry destroys a visitor's entry face (the exit check
    # needs it): a person asking needs a second one, the gate policy's own call does not
    command_effects = {"verify": "operate", "forget_entry": "erase", "status": "observe"}

    def __init__(self, config: FaceCameraConfig, ctx):
        super().__init__(config, ctx)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._buf = b""
        self.worker_status: dict[str, Any] = {}
        self._statuses = 0  # status messages received, so `status` can wait for a fresh one
        self._status_came = threading.Condition()
        self.events = self.refused = 0
        self.worker_pid: int | None = None
        self.worker_encoder: str | None = None  # "numpy", or "dlib" when forced or fallen back to

    def _state_dir(self) -> Path:
        state_dir = self.config.state_dir or self.ctx.state_dir  # the daemon's: where the gallery lives
        if state_dir is None:
            raise DriverError(f"driver {self.ctx.name}: no state_dir (set state_dir in its [[drivers]] entry)")
        return Path(state_dir)

    def _start_worker(self) -> None:
        cfg = self.config.model_dump(mode="json", exclude={"name", "kind", "state_dir"})
        # One BLAS thread: the worker shares the gate's cores with the daemon, and a search is
        # memory-bound anyway; spinning BLAS threads only add latency under load.
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **os.environ}
        self._proc = subprocess.Popen([sys.executable, "-m", "drivers.camera.worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, close_fds=True)
        try:
            # now: the daemon's trusted time, by which the worker judges a visit's end (not its wall clock)
            self._send({"op": "start", "state_dir": str(self._state_dir()), "config": cfg, "now": self.ctx.now()})
        except CommandError:  # gone before it was told to start: the fault names its exit
            raise DriverError(f"face worker exited with code {self._proc.wait(timeout=5)} before it started") from None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and not self.ctx.stopping.is_set():
            for msg in self._read(0.5):
                if msg.get("op") == "ready":
                    self.worker_pid, self.worker_encoder = msg.get("pid"), msg.get("encoder")
                    self.ctx.log.info("face_worker_ready", pid=self.worker_pid, load_ms=msg.get("load_ms"),
                                      encoder=self.worker_encoder)
                    return
                self._on_message(msg)
        if not self.ctx.stopping.is_set():
            raise DriverError(f"face worker did not start within {_STARTUP_TIMEOUT_S:.0f}s")

    def _send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise CommandError("face worker is not running; it is being restarted, try again shortly")
            try:
                proc.stdin.write(json.dumps(msg).encode() + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise CommandError("face worker has exited; it is being restarted") from None

    def _read(self, timeout: float) -> list[dict[str, Any]]:
        """Whole lines the worker wrote within ``timeout``; raises when it has exited."""
        out = self._proc.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(out.fileno(), 65536)
        if not chunk:
            code = self._proc.wait(timeout=5)
            raise DriverError(f"face worker exited with code {code}")
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def _on_message(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "event":
            try:
                self.ctx.emit(msg["type"], msg["payload"], msg.get("priority", "normal"))
                self.events += 1
            except StoreFull:
                self.refused += 1
        elif op == "status":
            with self._status_came:
                self.worker_status = {k: v for k, v in msg.items() if k != "op"}
                self._statuses += 1
                self._status_came.notify_all()
        elif op == "log":  # the worker's own lines, into the daemon's log (redacted like any)
            level = msg.get("level") if msg.get("level") in LEVELS else "warning"
            fields = {k: v for k, v in (msg.get("fields") or {}).items() if k != "event"}
            getattr(self.ctx.log, level)(str(msg.get("event")), **{"process": "face_worker", **fields})
        elif op == "fatal":
            raise DriverError(f"face worker failed: {msg.get('error')}")

    def run(self) -> None:
        if self.config.liveness == "none":  # opt-in and dangerous: logged at every start
            self.ctx.log.warning("camera_liveness_off", dangerous=True,
                                 detail="liveness = none: a photo held up to the camera can pass")
        self._start_worker()
        while not self.ctx.stopping.is_set():
            for msg in self._read(0.5):
                self._on_message(msg)

    @classmethod
    def check_command(cls, config: FaceCameraConfig, name: str, args: dict[str, Any]):
        """The validated arguments; CommandError for an unknown command or a bad argument (before a
        request is held for a second operator, and before anything reaches the face worker)."""
        model = _ARGS.get(name)
        if model is None:
            raise CommandError(f"camera.face does not support {name!r}; supported: {', '.join(_ARGS)}")
        a = parse_command_args(model, name, dict(args or {}))
        if name == "forget_entry" and not a.all and not a.key:
            raise CommandError("forget_entry needs 'key' (the booking id) or 'all': true")
        return a

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        a = self.check_command(self.config, name, args)
        if name == "verify":
            self._send({"op": "claim", "subject_id": a.subject_id, "booking_id": a.booking_id,
                        "ttl_s": a.ttl_s, "entry": a.entry, "now": self.ctx.now()})
            return {"accepted": True, "subject_id": a.subject_id, "booking_id": a.booking_id}
        if name == "forget_entry":
            self._send({"op": "forget_entry", "key": a.key, "all": a.all})
            return {"forgotten": "all" if a.all else a.key}
        return {"worker_pid": self.worker_pid, **self._fresh_status()}

    def _fresh_status(self) -> dict[str, Any]:
        """The worker's status now, not its last periodic one (up to 5 s old); that one when the
        worker cannot answer in time (it is being restarted)."""
        with self._status_came:
            seen = self._statuses
        try:
            self._send({"op": "status"})
        except CommandError:
            return self.worker_status
        with self._status_came:
            self._status_came.wait_for(lambda: self._statuses > seen, timeout=_STATUS_WAIT_S)
            return self.worker_status

    def health(self) -> dict[str, Any]:
        source = self.worker_status.get("source", {})
        degraded = source.get("kind") == "live" and not source.get("connected", True)
        return {"status": "degraded" if degraded else "ok", "worker_pid": self.worker_pid,
                "encoder": self.worker_encoder, "events": self.events, "frames": self.worker_status.get("frames", 0),
                "worker_peak_rss_mb": self.worker_status.get("peak_rss_mb"),
                "over_budget": self.worker_status.get("lane", {}).get("over_budget", {}),
                "source": source, "gallery": self.worker_status.get("gallery", {}),
                "entry_templates": self.worker_status.get("lane", {}).get("entry_templates", 0)}

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.stdin.write(b'{"op":"stop"}\n')
                proc.stdin.flush()
                proc.stdin.close()
            proc.wait(timeout=5)
        except (BrokenPipeError, OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
