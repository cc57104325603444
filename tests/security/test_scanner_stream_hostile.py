"""A scanner stream line built to be slow to parse costs time in proportion to its length.

The key=value reader split words with shlex, which builds each word a character at a time:
a 100 kB line took 2 s, a 4 MiB one (max_line_bytes allows 16 MiB) most of an hour, with
the driver's thread and every scan behind it stuck. The attack: such a line on a real TCP
stream into the real daemon, then a genuine record, which must still be recorded.
"""

from __future__ import annotations

import json
import random
import shlex

from drivers.sim.xray import LineServer, ScannerSim
from drivers.xray.line_source import split_words
from edge.testing.wait import wait_for
from tests._xray_helpers import daemon_events


def test_a_4_mib_record_of_quoted_escapes_is_refused_and_the_next_scan_is_recorded(edge_daemon, base_config):
    server, sim = LineServer(), ScannerSim()
    genuine = sim.record("clear")
    hostile = b'scan_id=S-X note="' + b'\\"x' * (4 * 1024 * 1024 // 3) + b'"\n'
    try:
        base_config["drivers"] = [{"name": "xr", "kind": "xray.stream", "url": server.url,
                                   "max_line_bytes": 16 * 1024 * 1024, "allow_unauthenticated": True,
                                   "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}]
        daemon = edge_daemon(base_config)
        server.wait_client(accepts=1, timeout=30)
        # Sent once the driver has its port open (pyserial flushes what arrived during open()).
        wait_for(lambda: daemon_events(daemon, "xray.stream_state"), 30, "the stream connected")
        server.send(hostile + sim.line_kv(genuine))
        [scan] = wait_for(lambda: daemon_events(daemon, "xray.scan"), 60, "the genuine scan behind the hostile line")
        assert scan["payload"]["scan_id"] == genuine["scan_id"]
        [refused] = daemon_events(daemon, "xray.rejected")  # parsed whole, then refused: no scanner, no outcome
        assert refused["payload"]["bytes"] == len(hostile)
        status = json.loads(daemon.cli("status", "--json").stdout)["daemon"]["drivers"]["xr"]
        assert status["status"] == "ok" and status["restarts"] == 0
    finally:
        server.close()


def test_words_are_split_exactly_as_shlex_splits_them():
    """The linear reader against the standard library's, on random lines of quotes,
    backslashes, spaces and text (its errors included)."""
    rng = random.Random(24)
    alphabet = ["a", "k=", "=", " ", "\t", "\n", "\r", "'", '"', "\\", "é", "\x0b", "v w"]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        try:
            want: object = shlex.split(text, comments=False, posix=True)
        except ValueError as exc:
            want = str(exc)
        try:
            got: object = split_words(text)
        except ValueError as exc:
            got = str(exc)
        assert got == want, repr(text)
