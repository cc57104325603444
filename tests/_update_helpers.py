"""A real TUF repository served over HTTP, and tiny release wheelhouses, for update tests."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import shutil
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

from edge.update.repo import ReleaseRepo

DELEGATIONS = ["gate.canary", "gate.site-site-1", "gate.all", "tablet.all"]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class RepoServer:
    """http.server over the repository folder, on a free localhost port, in a thread."""

    def __init__(self, folder: Path, handler_class: type[http.server.SimpleHTTPRequestHandler] = Quiet):
        handler = functools.partial(handler_class, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def new_repo(folder: Path) -> ReleaseRepo:
    repo = ReleaseRepo(folder)
    repo.init(DELEGATIONS)
    return repo


def fake_wheel(out: Path, version: str, shim: str) -> Path:
    """A wheel named ``edge`` whose ``edge`` console script runs ``shim``'s main()."""
    dist = f"edge-{version}.dist-info"
    files = {
        "edge_release_shim.py": shim,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: edge\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nedge = edge_release_shim:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"edge-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def shim_running_this_edge(config_override: Path | None = None) -> str:
    """A release whose ``edge`` is this test's edge (optionally with another config file)."""
    override = f"{str(config_override)!r}" if config_override else "None"
    return (
        "import os, sys\n"
        f"PY = {sys.executable!r}\nOVERRIDE = {override}\n"
        "def main():\n"
        "    args = sys.argv[1:]\n"
        "    if OVERRIDE and '--config' in args:\n"
        "        args[args.index('--config') + 1] = OVERRIDE\n"
        "    os.execv(PY, [PY, '-m', 'edge', *args])\n")


def wheelhouse(out: Path, version: str, shim: str) -> Path:
    """A release archive: ``wheelhouse/*.whl`` in a tar.gz, as central builds it."""
    wheels = out / f"wh-{version}"
    wheel = fake_wheel(wheels, version, shim)
    archive = out / f"edge-{version}-wheelhouse.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
    shutil.rmtree(wheels)
    return archive


def base_install(root: Path) -> None:
    """What scripts/install.sh leaves in ROOT/opt/edge/bin/edge, as a launcher of this edge."""
    bin_dir = root / "opt/edge/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "edge"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m edge \"$@\"\n")
    script.chmod(0o755)


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
