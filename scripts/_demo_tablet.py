"""The demo's tablet: central's side (a content server with one course, a signed contacts list)
and a resident at the tablet (the UI's calls on the daemon's local API socket)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

SITE, TABLET, RESIDENT, COURSE = "hmp-demo", "tablet-a-101", "res-demo1", "intro-literacy"
PIN = "2468"  # the demo resident's PIN; central keeps only its scrypt verifier


def central_for_tablet(work: Path, broker, tablet_state: Path):
    """A content server with one course assigned to the tablet, its contacts allowlist and resident
    directory, sealed to the tablet's key (made here, as provisioning does, before its first start)."""
    from edge import sealing, signing
    from services.learning._link import StandaloneLink
    from services.learning.server import ContentServer
    from services.messaging._crypto import generate_seal_keypair
    from services.residents.directory import make_verifier

    key_path, pub, _ = signing.generate_keypair(work / "keys", "central")
    _, seal_pub = generate_seal_keypair(work / "keys", "central")
    course = work / "content" / COURSE
    course.mkdir(parents=True)
    (course / "lesson-1.txt").write_text("Lesson 1: reading signs.\n" * 2000)
    (course / "video-1.mp4").write_bytes(os.urandom(3 * 1024 * 1024))  # stands in for a video
    link = StandaloneLink(broker.uri, client_id="demo-central").start()
    key = signing.load_private_key(key_path)
    server = ContentServer(link, work / "content", SITE, key).start()
    server.publish_catalog(assignments=[{"course": COURSE, "device": TABLET}])
    contacts = {"type": "messaging.contacts", "site": SITE, "device": TABLET, "version": 1,
                "issued_at": "2026-01-01T00:00:00+00:00",
                "residents": [{"resident": RESIDENT, "contacts": [{"id": "c-1", "name": "Family"}]}]}
    to_tablet = {TABLET: sealing.device_key(tablet_state).public_raw}
    directory = {"type": "residents.directory", "site": SITE, "device": TABLET, "version": 1,
                 "issued_at": "2026-01-01T00:00:00+00:00",
                 "residents": [{"pseudonym": RESIDENT, "status": "active", "verifier": make_verifier(PIN)}]}
    for leaf, doc in (("msg/contacts", contacts), ("residents/directory", directory)):
        link.publish(f"edge/v1/{SITE}/{TABLET}/{leaf}",
                     sealing.sealed_message(json.dumps(signing.sign(doc, key)).encode(), to_tablet), retain=True)
    print(f"demo: central's content server offers course {COURSE} to {TABLET}")
    return server, {"trust": {"central_keys": [str(pub)]}, "messaging": {"central_seal_key": str(seal_pub)}}


class Resident(threading.Thread):
    """A resident at the tablet: writes to their family, while the course downloads."""

    def __init__(self, state_dir: Path, stop: threading.Event):
        super().__init__(daemon=True, name="demo-resident")
        self.sock, self.halt = state_dir / "api.sock", stop
        self.token: str | None = None
        self.message_id: str | None = None
        self.course_bytes: int | None = None
        self.error: str | None = None

    def api(self, method: str, url: str, body=None):
        from edge.localapi.client import ApiUnavailable, call_json

        try:
            if self.token is None:  # the resident logs in with their PIN, as at the tablet's login screen
                code, got = call_json(self.sock, "POST", "/v1/session", {"pseudonym": RESIDENT, "pin": PIN},
                                      timeout=5)
                if code != 201:
                    return code, got
                self.token = got["token"]
            return call_json(self.sock, method, url, body, headers={"Authorization": f"Bearer {self.token}"},
                             timeout=5)
        except ApiUnavailable:
            return None, None

    def run(self) -> None:
        try:
            self._compose()
            self._course()
        except Exception as exc:  # shown by the demo at the end instead of dying silently
            self.error = f"{type(exc).__name__}: {exc}"

    def _until(self, fn, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.halt.is_set():
            if found := fn():
                return found
            self.halt.wait(0.25)
        return None

    def _directory_applied(self) -> bool:
        """A login before the tablet holds the directory would count as a wrong PIN."""
        try:
            status = json.loads((self.sock.parent / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return status.get("components", {}).get("residents", {}).get("directory_version", 0) >= 1

    def _compose(self) -> None:
        if not self._until(self._directory_applied) or \
                not self._until(lambda: self.api("GET", "/v1/messaging/contacts")[0] == 200):
            return
        code, msg = self.api("POST", "/v1/messaging/messages", {"contact": "c-1", "body": "See you on Sunday."})
        if code != 201:
            raise RuntimeError(f"compose answered {code}: {msg}")
        self.message_id = msg["id"]
        print(f"demo: on {TABLET}, resident {RESIDENT} writes to Family: message {msg['id'][:8]} "
              f"{msg['state']} (POST /v1/messaging/messages on the tablet's socket)", flush=True)

    def _course(self) -> None:
        def cached():
            code, cat = self.api("GET", "/v1/learning/catalog")
            course = next((c for c in (cat or {}).get("courses", []) if c["id"] == COURSE), None) \
                if code == 200 else None
            if course and course["items"] and all(i["cached"] for i in course["items"]):
                return sum(i["size"] for i in course["items"])
            return None
        self.course_bytes = self._until(cached)
        if self.course_bytes:
            print(f"demo: on {TABLET}, course {COURSE} is downloaded and checked "
                  f"({self.course_bytes / 1e6:.1f} MB): the resident can study offline", flush=True)
