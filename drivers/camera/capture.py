"""Frame sources: a V4L2 device, an RTSP/HTTP stream, a video file, or a folder of images.

Live sources (device, stream) are read by a grabber thread that keeps only
the newest frame: the pipeline always works on what the camera sees now and
a slow frame never builds a backlog (skipped frames are counted). A lost
device or stream is reopened with backoff. A video file is read at its own
frame rate, newest-first the same way. A folder (tests, demos) is played in
file-name order, every image once (``loop`` to repeat), read like any photo
file (upright by its EXIF orientation, a huge one scaled down); a file that
cannot be read is skipped and counted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from drivers.camera.imagefile import ImageError, load

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def _open_capture(uri: str) -> cv2.VideoCapture:
    if uri.startswith("/dev/video"):
        cap = cv2.VideoCapture(uri, cv2.CAP_V4L2)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's own queue would be a backlog
        return cap
    return cv2.VideoCapture(uri, cv2.CAP_FFMPEG)


class FolderSource:
    """Images of a folder in name order; ``ended`` once played (unless ``loop``)."""

    live = False

    def __init__(self, folder: str, loop: bool = False):
        self.folder, self.loop = Path(folder), loop
        self._files: list[Path] = []
        self._i = 0
        self.ended = False
        self.frames = self.dropped = self.reconnects = self.unreadable = 0
        self.last_error: str | None = None

    def _scan(self) -> None:
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)

    def read(self, timeout: float) -> np.ndarray | None:
        if not self._files or self._i >= len(self._files):
            if self._files and not self.loop:
                self.ended = True
                return None
            self._scan()
            self._i = 0
            if not self._files:
                time.sleep(min(timeout, 0.2))
                return None
        path = self._files[self._i]
        self._i += 1
        try:
            frame = load(path)
        except ImageError as exc:  # a half-written or foreign file: the next one may be fine
            self.unreadable += 1
            self.last_error = str(exc)
            return None
        self.frames += 1
        return frame

    def close(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"kind": "folder", "frames": self.frames, "ended": self.ended,
                "position": self._i, "files": len(self._files), "unreadable": self.unreadable,
                "last_error": self.last_error}


class LiveSource:
    """A device, stream or video file, read by a grabber thread that keeps the newest frame."""

    live = True

    def __init__(self, uri: str, loop: bool = False, backoff_max_s: float = 10.0):
        self.uri, self.loop, self.backoff_max_s = uri, loop, backoff_max_s
        self.is_file = Path(uri).is_file()
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._fresh = False
        self._stop = threading.Event()
        self.ended = False
        self.connected = False
        self.frames = self.dropped = self.reconnects = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._grab_loop, name="capture", daemon=True)
        self._thread.start()

    def _grab_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            cap = _open_capture(self.uri)
            if not cap.isOpened():
                self.last_error = f"cannot open {self.uri}"
                cap.release()
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_s)
                self.reconnects += 1
                continue
            self.connected, delay = True, 0.5
            self._pump(cap)
            cap.release()
            self.connected = False
            if self.is_file and not self.loop:
                self.ended = True
                with self._cond:
                    self._cond.notify_all()
                return
            if not self.is_file:
                self.reconnects += 1
                self.last_error = "stream lost; reconnecting"

    def _pump(self, cap: cv2.VideoCapture) -> None:
        # A file is paced at its own frame rate, as a camera would deliver it.
        interval = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 25.0) if self.is_file else 0.0
        next_at = time.monotonic()
        while not self._stop.is_set():
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            with self._cond:
                if self._fresh:
                    self.dropped += 1  # the pipeline never saw it: newest-first
                self._frame, self._fresh = frame, True
                self.frames += 1
                self._cond.notify_all()
            if interval:
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def read(self, timeout: float) -> np.ndarray | None:
        """The newest frame not yet returned, waiting up to ``timeout``; None if none came."""
        with self._cond:
            if not self._fresh and not self.ended:
                self._cond.wait(timeout)
            if not self._fresh:
                return None
            self._fresh = False
            return self._frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def status(self) -> dict[str, Any]:
        return {"kind": "file" if self.is_file else "live", "connected": self.connected,
                "frames": self.frames, "dropped": self.dropped, "reconnects": self.reconnects,
                "ended": self.ended, "last_error": self.last_error}


def open_source(uri: str, loop: bool = False):
    """A folder path plays images; anything else goes to OpenCV (device, rtsp://, http://, file)."""
    if Path(uri).is_dir():
        return FolderSource(uri, loop=loop)
    return LiveSource(uri, loop=loop)
