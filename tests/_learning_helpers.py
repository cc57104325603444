"""Shared helpers of the learning tests: a content folder, central's key, a server."""

from __future__ import annotations

import os
from pathlib import Path

from edge import signing
from services.learning._link import StandaloneLink
from services.learning.server import ContentServer

CHUNK = 64 * 1024


def make_folder(root: Path, courses: dict[str, dict[str, int]], seed: int = 1) -> Path:
    """courses = {course id: {file name: size}}; files hold random bytes."""
    folder = root / "content"
    for course, files in courses.items():
        (folder / course).mkdir(parents=True, exist_ok=True)
        for name, size in files.items():
            (folder / course / name).write_bytes(os.urandom(size))
    return folder


def central_key(root: Path, name: str = "central"):
    key_path, pub_path, _ = signing.generate_keypair(root / "keys", name)
    return signing.load_private_key(key_path), pub_path, key_path


def start_server(broker, folder: Path, site: str, key, chunk: int = CHUNK) -> ContentServer:
    link = StandaloneLink(broker.uri, client_id="content-server").start()
    return ContentServer(link, folder, site, key, chunk_size=chunk).start()
