"""Fuzz harness, part 1: each codec (decoder and driver over a pty), each scanner format, signed documents.

After every hostile case the component is healthy and still processes a valid
input of the same kind. Sized for the suite (``EDGE_FUZZ_EXAMPLES`` or
``scripts/fuzz.py`` runs it longer). Part 2 (``test_fuzz_daemon.py``) drives
the real daemon over the broker and the local API.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.sim.xray import ScannerSim, dicos_bytes
from drivers.turnstile import messages as m
from drivers.turnstile.codecs import CODECS
from drivers.xray.folder import XrayFolderDriver
from edge.signing import (
    DocumentRejected,
    generate_keypair,
    load_private_key,
    load_public_keys,
    open_signed,
    sign,
)
from edge.testing.hostile import example_count, hostile_bytes, hostile_json
from tests._turnstile_helpers import Lane
from tests._xray_helpers import XrayHarness


def _settings(n: int):
    return settings(max_examples=example_count(n), deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


STATUS = m.Status(mode=m.Mode.LOCKED, queued=0)


@pytest.mark.parametrize("codec_name", sorted(CODECS))
def test_fuzz_codec_decoders_never_raise_and_resync(codec_name):
    codec = CODECS[codec_name]
    valid = codec.encode(STATUS, 1)

    @_settings(300)
    @given(hostile_bytes(valid), st.integers(1, 64))
    def case(data: bytes, chunk: int):
        decoder = codec.decoder()
        for i in range(0, len(data), chunk):
            decoder.feed(data[i:i + chunk])  # any bytes: messages or nothing, never an exception
        decoder.idle()                       # the line goes quiet
        got = decoder.feed(valid)
        assert [r.message for r in got] == [STATUS], f"valid frame lost after {data!r}"
    case()


@pytest.mark.parametrize("codec_name", sorted(CODECS))
def test_fuzz_codec_driver_over_a_pty(tmp_path, codec_name):
    lane = Lane(codec_name, tmp_path).start()
    try:
        lane.online()
        valid = CODECS[codec_name].encode(STATUS, 1)

        @_settings(15)
        @given(hostile_bytes(valid))
        def case(data: bytes):
            lane.sim._send(data)  # hostile bytes from the controller's side of the line
            result = lane.driver.handle("ping", {})  # positive control: a command still completes
            assert result["ok"] and result["status"]["mode"] == "locked"
            assert lane.driver.health()["status"] == "ok"
        case()
    finally:
        lane.stop()


_EVENTS = st.builds(m.DeviceEvent, seq=st.integers(0, 2**16 - 1), kind=st.sampled_from(list(m.EventKind)),
                    direction=st.sampled_from([None, "in", "out"]), arg=st.integers(0, 255),
                    counter=st.integers(0, 2**32 - 1), device_time=st.integers(0, 2**32 - 1))
_REPLIES = st.one_of(_EVENTS, st.builds(m.Counters, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                     st.builds(m.Status, st.sampled_from(list(m.Mode)), st.booleans(), st.booleans(),
                               st.booleans(), st.booleans(), st.integers(0, 255)))


@pytest.mark.parametrize("codec_name", sorted(CODECS))
def test_fuzz_well_formed_frames_with_extreme_values(tmp_path, codec_name):
    """Frames that pass every check but carry absurd values, unasked for: taken or ignored, never a crash."""
    lane = Lane(codec_name, tmp_path).start()
    try:
        lane.online()
        codec = CODECS[codec_name]

        @_settings(25)
        @given(st.lists(_REPLIES, min_size=1, max_size=4))
        def case(messages):
            lane.sim._send(b"".join(codec.encode(msg, 1) for msg in messages))
            assert lane.driver.handle("ping", {})["ok"]  # positive control
            assert lane.driver.health()["status"] == "ok" and lane.driver.health()["devices"]["1"]["online"]
        case()
    finally:
        lane.stop()


def test_fuzz_signed_documents_are_accepted_or_refused_with_a_reason(tmp_path):
    key_path, pub, _ = generate_keypair(tmp_path, "central")
    trusted = load_public_keys([pub])
    valid = sign({"type": "t", "site": "site-1", "n": 1, "items": [{"a": "b", "x": 2.5}]}, load_private_key(key_path))

    @_settings(300)
    @given(hostile_json(valid))
    def case(raw: bytes):
        try:
            open_signed(raw, trusted, None, "doc", site="site-1")
        except DocumentRejected as exc:
            assert exc.problem in {"not_json", "not_object", "signature", "schema", "wrong_site", "too_large"}
    case()
    assert open_signed(json.dumps(valid).encode(), trusted, None, "doc", site="site-1")["n"] == 1


def _scanner_files(sim: ScannerSim):
    """(suffix, valid bytes, hostile strategy) for each file format the watch folder takes."""
    rec = sim.record("suspicious")
    return {
        "json": (".json", lambda r: json.dumps(r).encode(), hostile_json(rec)),
        "xml": (".xml", sim.xml, hostile_bytes(sim.xml(rec))),
        "dicos": (".dcm", lambda r: dicos_bytes(r, pixels=os.urandom(256)),
                  hostile_bytes(dicos_bytes(rec, pixels=os.urandom(256)))),
    }


@pytest.mark.parametrize("fmt", ["json", "xml", "dicos"])
def test_fuzz_scanner_files_never_stop_the_inbox(tmp_path, fmt):
    harness = XrayHarness(tmp_path, limit_usv=1e6, warning_usv=1e6)
    try:
        inbox, sim = tmp_path / "inbox", ScannerSim(dose_usv=0.1)
        inbox.mkdir()
        suffix, make_valid, strategy = _scanner_files(sim)[fmt]
        driver = harness.start_driver(XrayFolderDriver, path=inbox, poll_s=0.02, settle_s=0.02,
                                      incomplete_wait_s=0)
        counter = iter(range(10**9))

        @_settings(12)
        @given(strategy)
        def case(data: bytes):
            n = next(counter)
            (inbox / f"hostile-{n}{suffix}").write_bytes(data)
            rec = sim.record("clear")
            (inbox / f"valid-{n}{suffix}").write_bytes(make_valid(rec))
            harness.wait(lambda: not any(p.name.endswith(f"-{n}{suffix}") for p in inbox.iterdir()), 20,
                         "both files taken")  # each one scanned or quarantined: nothing left behind
            assert driver.health()["status"] == "ok", driver.health()
            assert harness.drivers[0][3] == [], "the driver crashed"
        case()
        n_valid = len([p for p in (inbox / "processed").iterdir() if p.name.startswith("valid-")])
        assert n_valid == next(counter)  # every valid file was processed
    finally:
        harness.close()


@pytest.mark.parametrize("form", ["json", "kv"])
def test_fuzz_scanner_stream_lines_are_scans_or_refusals(form):
    """The x-ray stream adapter's line formats: every line is a scan or a ScanRejected, nothing else.

    Each line goes through the adapter's own front, the LineSplitter at the driver's default
    max_line_bytes: a longer line (the deepest nesting drawn here is 400 kB) is dropped and
    reported before it is parsed, as in the driver, so only lines the driver parses are parsed."""
    from drivers.xray import line_source
    from drivers.xray.scan import ScanRejected, build_scan
    from drivers.xray.stream import StreamConfig

    sim = ScannerSim(dose_usv=0.5)
    rec = sim.record("suspicious")
    valid = (sim.line_json if form == "json" else sim.line_kv)(rec).rstrip(b"\n")
    strategy = hostile_json(rec) if form == "json" else hostile_bytes(valid)
    bound = StreamConfig.model_fields["max_line_bytes"].default

    @_settings(400)
    @given(strategy)
    def case(line: bytes):
        line = line.replace(b"\n", b" ")
        (item,) = line_source.LineSplitter(bound).feed(line + b"\n")
        if isinstance(item, line_source.Overlong):  # the driver reports it (xray.rejected), never parses it
            assert len(line) > bound and item.bytes == len(line) + 1
            return
        assert item == line
        try:
            build_scan(line_source.parse(item, "line 1"), "line 1")
        except ScanRejected as exc:
            assert exc.reason.startswith("line 1")
    case()
    assert build_scan(line_source.parse(valid, "line 1"), "line 1").scan_id == rec["scan_id"]


def test_fuzz_card_reads_are_a_card_or_a_reason():
    """OSDP card data as a reader (or someone on its wire) sends it: decoded, or refused with a reason."""
    from drivers.readers.cards import decode, encode_h10301

    @_settings(500)
    @given(st.sampled_from(["wiegand", "raw", "ascii", "bogus"]), st.binary(max_size=64),
           st.one_of(st.none(), st.integers(-10, 600)), st.booleans())
    def case(fmt, data, length, as_text):
        card = decode(fmt, data, length, raw_as_text=as_text)
        assert card.credential is not None or card.problem  # unusable reads always say why
    case()
    assert decode("raw", encode_h10301(12, 3456), 26).credential == "12:3456"  # positive control
