"""Line-stream adapter in process over a real TCP socket and a real pty."""

from __future__ import annotations

import os
import threading

import pytest

from drivers.sim.xray import LineServer, ScannerSim
from drivers.xray.stream import XrayStreamDriver
from tests._xray_helpers import XrayHarness


@pytest.fixture
def harness(tmp_path):
    h = XrayHarness(tmp_path)
    yield h
    h.close()


def _ids(h):
    return [e["payload"]["scan_id"] for e in h.events("xray.scan")]


def _connected(harness, driver, n):
    # pyserial flushes what arrived during open(): send only once the port is open.
    harness.wait(lambda: driver.counts["connects"] >= n and driver.connected, what=f"connection {n}")


def test_socket_stream_survives_a_10mb_line_bad_records_and_a_reconnect(harness):
    server = LineServer()
    sim = ScannerSim()
    recs = [sim.record(s) for s in ("clear", "suspicious", "override", "no_reason")]
    try:
        driver = harness.start_driver(XrayStreamDriver, url=server.url, max_line_bytes=4096, allow_unauthenticated=True,
                                      reconnect_min_s=0.05, reconnect_max_s=0.2)
        _connected(harness, driver, 1)
        server.wait_client(accepts=1)  # the driver's connect can finish before our accept()
        server.send(sim.line_json(recs[0]) + b"z" * (10 * 1024 * 1024) + b"\n" + sim.line_kv(recs[1])
                    + b"scan_id=S9 garbage\n" + b'{"scan_id": "S10"}\n' + sim.line_json(recs[0]))
        harness.wait(lambda: len(harness.events("xray.rejected")) == 3 and len(_ids(harness)) == 2,
                     what="2 scans and 3 rejections")
        reasons = [e["payload"]["reason"] for e in harness.events("xray.rejected")]
        assert "line of 10485761 bytes is over the 4096-byte limit" in reasons[0]
        assert "has no '='" in reasons[1] and "scanner: missing" in reasons[2]
        harness.wait(lambda: driver.counts["duplicates"] == 1, what="the resent scan skipped")

        server.drop_client()  # the scanner's port resets mid-shift
        _connected(harness, driver, 2)
        server.wait_client(accepts=2)
        server.send(b"partial line lost with the conn")
        server.drop_client()
        _connected(harness, driver, 3)
        server.wait_client(accepts=3)
        server.send(sim.line_kv(recs[2]) + sim.line_json(recs[3]))
        harness.wait(lambda: len(_ids(harness)) == 4, what="scans after reconnects")
        assert _ids(harness) == [r["scan_id"] for r in recs]
        assert driver.counts["reconnects"] >= 2 and len(harness.events("xray.rejected")) == 3
        server.send(sim.line_json({**recs[1], "dose_usv": 9.9}))  # a reused id with other content
        harness.wait(lambda: len(harness.events("xray.rejected")) == 4, what="the conflicting record refused")
        assert "already recorded with different content" in harness.events("xray.rejected")[-1]["payload"]["reason"]
        assert len(_ids(harness)) == 4
        harness.wait(lambda: harness.events("xray.unlawful_scan"), what="the no-reason alarm")
    finally:
        server.close()


def test_pty_stream_with_records_split_across_writes(harness):
    master, slave = os.openpty()
    sim = ScannerSim()
    recs = [sim.record("clear"), sim.record("suspicious")]
    try:
        driver = harness.start_driver(XrayStreamDriver, url=os.ttyname(slave), baudrate=115200, allow_unauthenticated=True,
                                      max_line_bytes=1024)
        _connected(harness, driver, 1)
        data = sim.line_kv(recs[0]) + b"x" * 5000 + b"\n" + sim.line_json(recs[1])
        writer = threading.Thread(target=lambda: [os.write(master, data[i:i + 100])
                                                  for i in range(0, len(data), 100)], daemon=True)
        writer.start()
        harness.wait(lambda: len(_ids(harness)) == 2, what="two scans over the pty")
        writer.join(10)
        assert _ids(harness) == [r["scan_id"] for r in recs]
        assert "5001 bytes" in harness.events("xray.rejected")[0]["payload"]["reason"]
    finally:
        harness.close()  # the driver stops before its pty goes away (no disconnect to report)
        os.close(master)
        os.close(slave)
