"""Frame sources: newest-first from a real video file, reconnect on a dead stream, folder playback."""

from __future__ import annotations

import socket
import time

import cv2
import numpy as np
import pytest

from drivers.camera.capture import FolderSource, LiveSource, open_source
from edge.testing.wait import wait_for


@pytest.fixture
def video(tmp_path):
    """A 3-second 30 fps MJPG file whose frame i is filled with grey level 30 + 2*i."""
    path = tmp_path / "lane.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG")
    for i in range(90):
        writer.write(np.full((240, 320, 3), 30 + 2 * i, np.uint8))
    writer.release()
    return path


def _level(frame) -> int:
    # The frame index back: MJPG's limited-range YUV reads a grey about 1.3 levels darker.
    return round((float(frame.mean()) - 29) / 2)


def test_a_slow_consumer_gets_the_newest_frame_and_never_a_backlog(video):
    source = open_source(str(video))
    assert isinstance(source, LiveSource)
    try:
        seen = []
        deadline = time.monotonic() + 20
        while not source.ended and time.monotonic() < deadline:
            frame = source.read(timeout=1.0)
            if frame is not None:
                seen.append(_level(frame))
                time.sleep(0.25)  # a slow pipeline: ~4 frames/s against a 30 fps camera
        assert source.ended
        last = source.read(timeout=0)
        if last is not None:
            seen.append(_level(last))
        assert seen == sorted(seen) and len(set(seen)) == len(seen)  # in order, none twice
        assert source.dropped > 40 and len(seen) < 30  # most frames skipped, not queued
        assert seen[-1] == 89  # it ends on the camera's newest frame, never behind it
    finally:
        source.close()


def test_a_dead_stream_is_retried_with_backoff_and_reported(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = LiveSource(f"http://127.0.0.1:{port}/camera.mjpg", backoff_max_s=0.5)
    try:
        wait_for(lambda: source.reconnects >= 2, 15, "two reconnects")
        status = source.status()
        assert status["reconnects"] >= 2 and not status["connected"] and "cannot open" in status["last_error"]
        assert source.read(timeout=0.1) is None
    finally:
        source.close()


def test_a_looping_file_is_reopened_at_its_end(video):
    source = LiveSource(str(video), loop=True)
    try:
        deadline = time.monotonic() + 20
        while source.frames <= 100 and time.monotonic() < deadline:
            source.read(timeout=0.5)
        assert source.frames > 100 and not source.ended  # past the 90 frames of the file
    finally:
        source.close()


def test_folder_plays_every_image_once_in_name_order(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path))
    assert isinstance(source, FolderSource)
    levels = []
    while (frame := source.read(0.1)) is not None:
        levels.append(int(frame.mean()))
    assert levels == [0, 10, 20] and source.ended
