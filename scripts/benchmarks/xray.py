"""X-ray adapters: scans per second from a watch folder and from a TCP line stream.

Ours: the real folder / stream driver in process with the real store and the
x-ray service (ledger rows, alarms), every scan stored durably before its
file is moved or the next line is read. Bare, in the same run: the least any
exactly-once ingester must do per scan — read the file (or line), json.loads,
one durable SQLite commit (WAL, synchronous=FULL, like the store), and for
files the rename into processed/ with a directory fsync. Higher scans_per_s is
better; ratio = ours / bare. A body scanner produces about one scan a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from edge.sqlite import open_db


def add_arguments(parser) -> None:
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)


class _Rig:
    def __init__(self, root: Path):
        from edge.config import Settings
        from edge.events import make_event
        from edge.store import Store
        from services.xray.service import XrayService

        self.settings = Settings(device_id="bench-1", site="bench", role="gate", state_dir=root / "state")
        self.store = Store(self.settings.state_dir, device="bench-1", site="bench")
        self.count = 0
        self.done = threading.Event()
        self.target = 0
        self.store.add_listener(self._seen)

        def emit(type, payload, priority, source):
            return self.store.append(make_event(device="bench-1", site="bench", type=type, source=source,
                                                payload=payload, priority=priority))

        self.emit = emit
        self.service = XrayService(self.settings, self.store, emit)
        self.service.start()

    def _seen(self, events) -> None:
        self.count += sum(e.type == "xray.scan" for e in events)
        if self.target and self.count >= self.target:
            self.done.set()

    def driver(self, cls, **options):
        import structlog

        from edge.driver import DriverContext

        stopping = threading.Event()
        ctx = DriverContext("bench", self.emit, structlog.get_logger("bench"), stopping)
        driver = cls(cls.Config(name="bench", kind="bench", **options), ctx)
        thread = threading.Thread(target=driver.run, daemon=True)
        return driver, thread, stopping

    def close(self) -> None:
        self.service.stop()
        self.store.close()


def _bare_db(path: Path) -> sqlite3.Connection:
    conn = open_db(path)  # the ledger's own settings: WAL, synchronous FULL
    conn.execute("CREATE TABLE scans (id TEXT PRIMARY KEY, body BLOB)")
    return conn


def _folder(root: Path, n: int) -> dict:
    import structlog

    from drivers.sim.xray import ScannerSim
    from drivers.xray.folder import XrayFolderDriver

    root.mkdir(parents=True, exist_ok=True)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    sim = ScannerSim(dose_usv=0.0)
    src = root / "src"
    for _ in range(n):
        sim.write_json(src, sim.record("clear"))
    inbox = root / "inbox"
    shutil.copytree(src, inbox)
    rig = _Rig(root / "ours")
    rig.target = n
    driver, thread, stopping = rig.driver(XrayFolderDriver, path=inbox, poll_s=0.02, settle_s=0.0)
    started = time.perf_counter()
    thread.start()
    rig.done.wait(300)
    while any(p.suffix == ".json" for p in inbox.iterdir()):  # last move after the last emit
        time.sleep(0.005)
    ours = time.perf_counter() - started
    stopping.set()
    thread.join(10)
    rig.close()

    bare_in, processed = root / "bare", root / "bare" / "processed"
    shutil.copytree(src, bare_in)
    processed.mkdir()
    conn = _bare_db(root / "bare.db")
    started = time.perf_counter()
    for path in sorted(bare_in.glob("*.json")):
        data = path.read_bytes()
        doc = json.loads(data)
        conn.execute("INSERT INTO scans VALUES (?, ?)", (doc["scan_id"], data))
        os.rename(path, processed / path.name)
        fd = os.open(processed, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    bare = time.perf_counter() - started
    conn.close()
    return {"folder_scans_per_s": round(n / ours, 1), "folder_bare_scans_per_s": round(n / bare, 1),
            "folder_ratio": round(bare / ours, 3)}


def _stream(root: Path, n: int) -> dict:
    import socket

    from drivers.sim.xray import LineServer, ScannerSim
    from drivers.xray.stream import XrayStreamDriver

    root.mkdir(parents=True, exist_ok=True)
    sim = ScannerSim(dose_usv=0.0)
    secret = root / "scanner.secret"  # every line authenticated, as on a real gate
    secret.write_bytes(b"0123456789abcdef0123456789abcdef-bench")
    secret.chmod(0o600)
    payload = b"".join(sim.signed(secret.read_bytes(), sim.line_json(sim.record("clear"))) for _ in range(n))
    server = LineServer()
    rig = _Rig(root / "ours-stream")
    rig.target = n
    driver, thread, stopping = rig.driver(XrayStreamDriver, url=server.url, secret_file=str(secret))
    thread.start()
    while not driver.connected:
        time.sleep(0.005)
    server.wait_client()  # the driver's connect can finish before the server's accept()
    started = time.perf_counter()
    server.send(payload)
    rig.done.wait(300)
    ours = time.perf_counter() - started
    stopping.set()
    thread.join(10)
    rig.close()
    server.close()

    import hashlib
    import hmac

    key = secret.read_bytes().strip()
    a, b = socket.socketpair()
    conn = _bare_db(root / "bare-stream.db")
    sender = threading.Thread(target=lambda: (a.sendall(payload), a.close()), daemon=True)
    started = time.perf_counter()
    sender.start()
    buf, count = b"", 0
    while count < n:
        buf += b.recv(65536)
        *lines, buf = buf.split(b"\n")
        for line in lines:
            mac, _, record = line.partition(b" ")  # the same per-line HMAC check, bare
            if not hmac.compare_digest(mac[12:], hmac.new(key, record, hashlib.sha256).hexdigest().encode()):
                raise RuntimeError("bare baseline: bad MAC")
            doc = json.loads(record)
            conn.execute("INSERT INTO scans VALUES (?, ?)", (doc["scan_id"], record))
            count += 1
    bare = time.perf_counter() - started
    conn.close()
    b.close()
    return {"stream_scans_per_s": round(n / ours, 1), "stream_bare_scans_per_s": round(n / bare, 1),
            "stream_ratio": round(bare / ours, 3)}


def run(args) -> dict:
    # Ours and bare alternate, fresh each round; medians damp a shared machine's noise.
    rounds: list[dict] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="xray-bench-") as tmp:
            root = Path(tmp)
            rounds.append({**_folder(root / "f", args.files), **_stream(root / "s", args.lines)})
    result: dict = {"files": args.files, "lines": args.lines, "rounds": args.rounds}
    for key in rounds[0]:
        result[key] = statistics.median(r[key] for r in rounds)
    result["ratio"] = min(result["folder_ratio"], result["stream_ratio"])
    return result
