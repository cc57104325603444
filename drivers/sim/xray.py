"""Body-scanner emulator: the far side of the x-ray adapters' wires.

Writes result files the way a scanner's exporter does (write to a hidden temp
name, then rename into the folder), DICOS files built with pydicom, and line
records for a serial/TCP event stream — in good scenarios (clear, suspicious
with regions, operator override, no reason, disallowed reason) and bad ones
(truncated JSON, wrong schema, XML bomb, XXE, 2 GB sparse file, garbage,
DICOS without required fields, overlong line).

    python -m drivers.sim.xray folder DIR --scenario suspicious --format xml --count 3
    python -m drivers.sim.xray stream --port 7001 --scenario clear --count 10 --interval 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

SCENARIOS = ("clear", "suspicious", "override", "no_reason", "bad_reason", "unknown_subject")
MALFORMED = ("truncated_json", "wrong_schema", "xml_bomb", "xxe", "sparse_2gb", "garbage", "dicos_missing")
FORMATS = ("json", "xml", "dicos")


class ScannerSim:
    """One emulated scanner: makes records and writes them in every supported form."""

    def __init__(self, scanner: str = "SIM-XR-1", subject: str = "A1234BC", operator: str = "op-7",
                 reason: str = "intelligence_led", dose_usv: float = 2.5):
        self.scanner, self.subject, self.operator = scanner, subject, operator
        self.reason, self.dose_usv = reason, dose_usv
        self._n = itertools.count(1)

    def record(self, scenario: str = "clear", **overrides: Any) -> dict[str, Any]:
        """Scan fields (JSON-able) for a scenario; ``overrides`` replace any field."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
        rec: dict[str, Any] = {
            "scan_id": f"{self.scanner}-{int(time.time() * 1000)}-{next(self._n)}",
            "scanner": self.scanner, "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "subject": self.subject, "operator": self.operator, "reason": self.reason,
            "outcome": "clear", "regions": [], "decision": "clear", "dose_usv": self.dose_usv,
        }
        if scenario in ("suspicious", "override"):
            rec.update(outcome="suspicious", decision="search" if scenario == "suspicious" else "clear",
                       regions=[{"x": 120, "y": 340, "w": 40, "h": 25, "label": "dense_object"}])
        elif scenario == "no_reason":
            rec["reason"] = None
        elif scenario == "bad_reason":
            rec["reason"] = "random"
        elif scenario == "unknown_subject":
            rec["subject"] = None
        rec.update(overrides)
        return rec

    # -- result files ----------------------------------------------------------

    def write_json(self, folder: Path, rec: dict[str, Any], image: bytes | None = None) -> Path:
        doc = dict(rec)
        if image is not None:
            doc["image"] = _place(Path(folder), f"{rec['scan_id']}.png", image).name
        return _place(Path(folder), f"{rec['scan_id']}.json", json.dumps(doc, indent=1).encode())

    def write_xml(self, folder: Path, rec: dict[str, Any], image: bytes | None = None) -> Path:
        return _place(Path(folder), f"{rec['scan_id']}.xml", self.xml(rec, image_name=(
            _place(Path(folder), f"{rec['scan_id']}.png", image).name if image is not None else None)))

    def xml(self, rec: dict[str, Any], image_name: str | None = None) -> bytes:
        parts = [f"<scan id={quoteattr(rec['scan_id'])} scanner={quoteattr(rec['scanner'])} "
                 f"time={quoteattr(rec['time'])}>"]
        for key in ("subject", "operator", "reason", "outcome", "decision", "dose_usv"):
            if rec.get(key) is not None:
                parts.append(f"  <{key}>{_esc(str(rec[key]))}</{key}>")
        if rec.get("regions"):
            parts.append("  <regions>" + "".join(
                "<region " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in r.items()) + "/>"
                for r in rec["regions"]) + "</regions>")
        if image_name:
            parts.append(f"  <image file={quoteattr(image_name)}/>")
        parts.append("</scan>")
        return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + "\n".join(parts) + "\n").encode()

    def write_dicos(self, folder: Path, rec: dict[str, Any], pixels: bytes | None = None,
                    drop: tuple[str, ...] = ()) -> Path:
        """A DICOS DX object for the record; ``drop`` leaves attributes out (malformed files)."""
        return _place(Path(folder), f"{rec['scan_id']}.dcm", dicos_bytes(rec, pixels, drop))

    # -- line records ------------------------------------------------------------

    @staticmethod
    def line_json(rec: dict[str, Any]) -> bytes:
        return json.dumps(rec, separators=(",", ":")).encode() + b"\n"

    @staticmethod
    def line_kv(rec: dict[str, Any]) -> bytes:
        parts = []
        for key, value in rec.items():
            if value is None:
                continue
            if key == "regions":
                if not value:
                    continue
                value = ";".join(",".join(str(r[k]) for k in ("x", "y", "w", "h", "label") if r.get(k) is not None)
                                 for r in value)
            text = str(value)
            parts.append(f'{key}="{text}"' if " " in text else f"{key}={text}")
        return " ".join(parts).encode() + b"\n"

    @staticmethod
    def signed(secret: bytes, line: bytes) -> bytes:
        """A line as an authenticating scanner sends it (``hmac-sha256=<hex> record``)."""
        from drivers.xray.stream import sign_line

        return sign_line(secret, line.rstrip(b"\n")) + b"\n"

    # -- bad input ---------------------------------------------------------------

    def write_malformed(self, folder: Path, kind: str) -> Path:
        """A bad file of ``kind`` (see MALFORMED), written complete into ``folder``."""
        folder, rec = Path(folder), self.record("clear")
        name = f"bad-{kind}-{next(self._n)}"
        if kind == "truncated_json":
            text = json.dumps(rec)
            return _place(folder, name + ".json", text[: len(text) // 2].encode())
        if kind == "wrong_schema":
            return _place(folder, name + ".json", json.dumps(
                {"id": rec["scan_id"], "person": "A1", "dose": "lots", "outcome": "maybe"}).encode())
        if kind == "xml_bomb":
            ents = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
            return _place(folder, name + ".xml", (f'<?xml version="1.0"?><!DOCTYPE scan [<!ENTITY lol0 "lol">'
                                                  f"{ents}]><scan>&lol9;</scan>").encode())
        if kind == "xxe":
            return _place(folder, name + ".xml", b'<?xml version="1.0"?><!DOCTYPE scan [<!ENTITY xxe SYSTEM '
                                                 b'"file:///etc/passwd">]><scan id="x">&xxe;</scan>')
        if kind == "sparse_2gb":
            tmp = folder / f".{name}.json.tmp"
            with open(tmp, "wb") as f:
                f.truncate(2 * 1024**3)  # sparse: no disk used, nothing to read
            return _rename(tmp, folder / (name + ".json"))
        if kind == "garbage":
            return _place(folder, name + ".json", os.urandom(4096))
        if kind == "dicos_missing":
            return _place(folder, name + ".dcm", dicos_bytes(rec, b"\0" * 64,
                                                             drop=("OperatorsName", "EntranceDoseInmGy")))
        raise ValueError(f"unknown malformed kind {kind!r}; choose from {', '.join(MALFORMED)}")


def dicos_bytes(rec: dict[str, Any], pixels: bytes | None = None, drop: tuple[str, ...] = ()) -> bytes:
    """Serialise a record as a DICOS DX object with pydicom (see dicos_source for the mapping)."""
    from io import BytesIO

    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.501.2.1"  # DICOS Digital X-Ray, for presentation
    uid = rec.get("dicos_uid") or generate_uid()
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("scan.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    when = datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).astimezone(UTC)
    values = {
        "SOPClassUID": meta.MediaStorageSOPClassUID, "SOPInstanceUID": uid,
        "AcquisitionDateTime": when.strftime("%Y%m%d%H%M%S.%f") + "+0000",
        "DeviceSerialNumber": rec["scanner"], "PatientID": rec.get("subject") or "",
        "OperatorsName": rec["operator"], "ReasonForTheRequestedProcedure": rec.get("reason") or "",
        "AlarmDecision": {"suspicious": "ALARM", "clear": "CLEAR"}.get(rec["outcome"], "UNKNOWN"),
        "AdditionalScreeningPerformed": "YES" if rec["decision"] == "search" else "NO",
        "EntranceDoseInmGy": f"{rec['dose_usv'] / 1000.0:.6f}",
    }
    for keyword, value in values.items():
        if keyword not in drop:
            setattr(ds, keyword, value)
    threats = []
    for region in rec.get("regions", []):
        item = Dataset()
        item.ThreatROIBase = [float(region["x"]), float(region["y"]), 0.0]
        item.ThreatROIExtents = [float(region["w"]), float(region["h"]), 1.0]
        item.ThreatCategory = "ANOMALY"
        threats.append(item)
    if threats:
        ds.ThreatSequence = threats
    if pixels is not None:
        ds.Rows, ds.Columns = 1, len(pixels)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = pixels
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _place(folder: Path, name: str, data: bytes) -> Path:
    """Write-then-rename, as a well-behaved exporter does: the folder never shows half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return _rename(tmp, folder / name)


def _rename(tmp: Path, target: Path) -> Path:
    os.rename(tmp, target)
    return target


class LineServer:
    """A scanner's TCP event port: accepts one client at a time and sends it lines."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._sock = socket.create_server((host, port))
        self.port = self._sock.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"
        self._client: socket.socket | None = None
        self._connected = threading.Condition()
        self.accepts = 0
        self._thread = threading.Thread(target=self._accept_loop, name="xray-sim-server", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._connected:
                if self._client is not None:
                    self._client.close()
                self._client = client
                self.accepts += 1
                self._connected.notify_all()

    def wait_client(self, timeout: float = 10.0, accepts: int = 1) -> None:
        """Block until at least ``accepts`` connections have been accepted in total."""
        with self._connected:
            if not self._connected.wait_for(lambda: self.accepts >= accepts and self._client, timeout):
                raise TimeoutError(f"no scanner client connected within {timeout}s")

    def send(self, data: bytes) -> None:
        with self._connected:
            client = self._client
        if client is None:
            raise ConnectionError("no client connected")
        client.sendall(data)

    def drop_client(self) -> None:
        """Close the current connection (the client must reconnect)."""
        with self._connected:
            if self._client is not None:
                self._client.close()
                self._client = None

    def close(self) -> None:
        self.drop_client()
        self._sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.sim.xray", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    folder = sub.add_parser("folder", help="write result files into a watch folder")
    folder.add_argument("dir", type=Path)
    folder.add_argument("--format", choices=FORMATS, default="json")
    stream = sub.add_parser("stream", help="serve line records on a TCP port (socket://)")
    stream.add_argument("--port", type=int, default=7001)
    stream.add_argument("--kv", action="store_true", help="key=value lines instead of JSON")
    stream.add_argument("--secret-file", type=Path, help="sign each line with this shared HMAC secret")
    for p in (folder, stream):
        p.add_argument("--scenario", choices=SCENARIOS + MALFORMED, default="clear")
        p.add_argument("--count", type=int, default=1)
        p.add_argument("--interval", type=float, default=0.0, help="seconds between records")
        p.add_argument("--subject", default="A1234BC")
        p.add_argument("--dose-usv", type=float, default=2.5)
    args = parser.parse_args(argv)
    sim = ScannerSim(subject=args.subject, dose_usv=args.dose_usv)
    server = LineServer(port=args.port) if args.mode == "stream" else None
    if server:
        print(f"serving on {server.url}; waiting for the edge driver to connect", flush=True)
        server.wait_client(timeout=3600)
    for i in range(args.count):
        if i and args.interval:
            time.sleep(args.interval)
        if args.scenario in MALFORMED:
            if server:
                server.send(b"x" * 10 * 1024 * 1024 + b"\n")
                continue
            print(sim.write_malformed(args.dir, args.scenario))
            continue
        rec = sim.record(args.scenario)
        if server:
            line = sim.line_kv(rec) if args.kv else sim.line_json(rec)
            secret = args.secret_file.read_bytes().strip() if args.secret_file else None
            server.send(sim.signed(secret, line) if secret else line)
        else:
            writer = {"json": sim.write_json, "xml": sim.write_xml, "dicos": sim.write_dicos}[args.format]
            print(writer(args.dir, rec, b"\x89PNG-sim" * 64))
    if server:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
