"""Scanner source codecs: every format maps to the same Scan; bad bytes get a clear reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim.xray import ScannerSim, dicos_bytes
from drivers.xray import dicos_source, json_source, line_source, xml_source
from drivers.xray.line_source import LineSplitter, Overlong
from drivers.xray.scan import ScanRejected, build_scan

SIM = ScannerSim()


def _scan(module, data: bytes):
    if module is line_source:
        return build_scan(line_source.parse(data.rstrip(b"\n"), "line 1"), "line 1")
    fields, image = module.parse(data, "f")
    return build_scan({**fields, "image": None} if image else fields, "f")


@pytest.mark.parametrize("scenario", ["clear", "suspicious", "override", "no_reason", "unknown_subject"])
def test_every_source_maps_a_scenario_to_the_same_scan(scenario):
    rec = SIM.record(scenario)
    scans = {
        "json": _scan(json_source, json.dumps(rec).encode()),
        "xml": _scan(xml_source, SIM.xml(rec)),
        "line_json": _scan(line_source, SIM.line_json(rec)),
        "line_kv": _scan(line_source, SIM.line_kv(rec)),
        "dicos": _scan(dicos_source, dicos_bytes(rec, b"\x01" * 32)),
    }
    for name, scan in scans.items():
        assert scan.scan_id == rec["scan_id"] or name == "dicos", name
        assert (scan.subject, scan.operator, scan.reason) == (rec["subject"], rec["operator"], rec["reason"]), name
        assert (scan.outcome, scan.decision, scan.dose_usv) == (rec["outcome"], rec["decision"], rec["dose_usv"]), name
        assert [(r.x, r.y, r.w, r.h) for r in scan.regions] == [
            (r["x"], r["y"], r["w"], r["h"]) for r in rec["regions"]], name
        assert scan.override is (scenario == "override"), name
    assert scans["dicos"].image.bytes == 32  # pixel data hashed, never carried


def test_payload_carries_image_hash_and_size_only():
    rec = SIM.record("suspicious")
    fields, _ = dicos_source.parse(dicos_bytes(rec, b"\x07" * 1000), "f.dcm")
    payload = build_scan(fields, "f.dcm").payload(format="dicos", record_sha256="0" * 64)
    assert payload["image"]["bytes"] == 1000 and len(payload["image"]["sha256"]) == 64
    assert b"\x07" * 16 not in json.dumps(payload).encode()
    assert payload["key"] == f"{rec['scanner']}/{payload['scan_id']}"


@pytest.mark.parametrize("data, expected", [
    (b'{"scan_id": "S1", "scanner": ', "invalid JSON at line 1"),
    (b'[1, 2]', "expected a JSON object"),
    (b'{"scan_id": "S1"}', "scanner: missing"),
    (b'\xff\xfe\x00garbage', "not UTF-8"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON refused"),
])
def test_json_rejections_say_what_is_wrong(data, expected):
    with pytest.raises(ScanRejected) as info:
        _scan(json_source, data)
    assert expected in info.value.reason


def test_suspicious_needs_regions_and_dose_must_be_sane():
    for bad, expected in ((SIM.record("suspicious", regions=[]), "needs at least one region"),
                          (SIM.record("clear", dose_usv=250_000), "dose_usv"),
                          (SIM.record("clear", time="2026-01-01T00:00:00"), "timezone")):
        with pytest.raises(ScanRejected, match=expected):
            _scan(json_source, json.dumps(bad).encode())


def test_xml_bomb_and_xxe_are_refused_before_expansion():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<scan>&b;</scan>")
    xxe = b'<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/hostname">]><scan>&x;</scan>'
    with pytest.raises(ScanRejected, match="billion-laughs"):
        xml_source.parse(bomb, "f.xml")
    with pytest.raises(ScanRejected, match="XXE"):
        xml_source.parse(xxe, "f.xml")


def test_dicos_missing_fields_are_named():
    data = dicos_bytes(SIM.record("clear"), None, drop=("OperatorsName", "AlarmDecision"))
    with pytest.raises(ScanRejected, match="lacks required attribute.*OperatorsName, AlarmDecision"):
        dicos_source.parse(data, "f.dcm")
    with pytest.raises(ScanRejected, match="not a DICOS"):
        dicos_source.parse(b"\0" * 300, "f.dcm")


def test_line_splitter_drops_an_overlong_line_without_buffering_it_and_resyncs():
    splitter = LineSplitter(1024)
    good = SIM.line_json(SIM.record("clear"))
    stream = good + b"y" * (10 * 1024 * 1024) + b"\n" + good
    out, peak = [], 0
    for i in range(0, len(stream), 65536):
        out += list(splitter.feed(stream[i:i + 65536]))
        peak = max(peak, splitter.pending)
    assert peak <= 1024
    assert out == [good.rstrip(b"\n"), Overlong(10 * 1024 * 1024 + 1), good.rstrip(b"\n")]


def test_key_value_records_with_quotes_and_errors():
    fields = line_source.parse(b'scan_id=S1 operator="op seven" regions=1,2,3,4,knife;5,6,7,8', "l")
    assert fields["operator"] == "op seven" and fields["regions"][0]["label"] == "knife"
    with pytest.raises(ScanRejected, match="has no '='"):
        line_source.parse(b"scan_id=S1 junk", "l")
    with pytest.raises(ScanRejected, match="x,y,w,h"):
        line_source.parse(b"regions=1,2", "l")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=8, max_value=64))
def test_splitter_never_exceeds_its_bound_and_emits_one_item_per_newline(chunks, bound):
    splitter = LineSplitter(bound)
    items = [item for chunk in chunks for item in splitter.feed(chunk)]
    assert len(items) == b"".join(chunks).count(b"\n")
    expected = b"".join(chunks).split(b"\n")[:-1]
    for item, line in zip(items, expected, strict=True):
        assert item == line if len(line) <= bound else item == Overlong(len(line) + 1)
    assert splitter.pending <= bound


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_a_scan_or_a_clear_rejection(data):
    for parse in (lambda d: json_source.parse(d, "f"), lambda d: xml_source.parse(d, "f"),
                  lambda d: line_source.parse(d.replace(b"\n", b""), "l"), lambda d: dicos_source.parse(d, "f")):
        try:
            fields = parse(data)
            build_scan(fields[0] if isinstance(fields, tuple) else fields, "f")
        except ScanRejected as exc:
            assert exc.reason.startswith(("f:", "l:"))
