"""The hashed lock files are current with pyproject.toml, and the installers require their hashes.

Made by scripts/lock.sh; this test needs no network: each lock records the
SHA-256 of its inputs (scripts/lock_stamp.py) and every direct dependency must
be pinned at a version its specifier allows (and above the advisories' fixes).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

LOCKS = {
    "requirements.lock": [],
    "requirements-gate.lock": ["gate"],
    "requirements-dev.lock": ["dev"],
    "requirements-dev-gate.lock": ["dev", "gate"],
}
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)")


def _pins(text: str) -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    for line in text.splitlines():
        if m := _PIN.match(line):
            pins.setdefault(m.group(1).lower().replace("_", "-"), []).append(m.group(2))
    return pins


def _stamp(spec: str) -> str:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "lock_stamp.py"), spec], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("name", [*LOCKS, "requirements-face.lock", "requirements-face-nodeps.lock"])
def test_lock_is_current_with_its_inputs(name):
    text = (REPO / name).read_text()
    first, second = text.splitlines()[:2]
    spec = re.search(r"from (\S+);", first).group(1)
    assert second == f"# inputs-sha256: {_stamp(spec)}", f"{name} is stale: run scripts/lock.sh and commit it"
    assert not re.search(r"(?im)^\s*--(index-url|extra-index-url|find-links|trusted-host)|://", text)
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip())
    assert entries and all("--hash=sha256:" in e for e in entries), "every requirement needs its hashes"


@pytest.mark.parametrize("name, extras", LOCKS.items())
def test_every_direct_dependency_is_pinned_within_its_specifier(name, extras):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    pins = _pins((REPO / name).read_text())
    for raw in wanted:
        req = Requirement(raw)
        versions = pins.get(req.name.lower().replace("_", "-"))
        assert versions, f"{name}: {req.name} is not locked: run scripts/lock.sh"
        assert all(req.specifier.contains(v, prereleases=True) for v in versions), (name, raw, versions)


def test_security_floors_are_above_the_advisories():
    pins = _pins((REPO / "requirements-dev-gate.lock").read_text())
    assert all(Version(v) >= Version("42.0.4") for v in pins["cryptography"])  # CVE-2024-26130
    for v in pins["pydicom"]:  # CVE-2026-32711: fixed in 2.4.5 and 3.0.2
        assert Version(v) >= Version("3.0.2") or Version("2.4.5") <= Version(v) < Version("3")


def test_installers_require_the_hashes_and_keep_face_recognition_without_deps():
    for script in ("setup.sh", "install.sh"):
        text = (REPO / "scripts" / script).read_text()
        assert "--require-hashes -r" in text, script
        assert re.search(r"--require-hashes --no-deps -r \S*requirements-face-nodeps\.lock", text), script
        assert "face_recognition\n" not in text.replace("# ", "")  # never installed by name, unpinned
