"""The SHA-256 of what a lock file was made from (scripts/lock.sh, tests/test_lock.py).

Inputs: ``pyproject:EXTRA,EXTRA`` (core dependencies plus those extras, and
requires-python) or ``file:PATH`` (a requirements .in file, comments ignored).
Only what decides the resolution counts, so editing a comment or another
section of pyproject.toml does not make a lock stale.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def describe(spec: str) -> object:
    kind, _, arg = spec.partition(":")
    if kind == "pyproject":
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        extras = [e for e in arg.split(",") if e]
        return {"requires-python": project.get("requires-python"),
                "dependencies": sorted(project.get("dependencies", [])),
                "extras": {e: sorted(project["optional-dependencies"][e]) for e in extras}}
    if kind == "file":
        lines = (ROOT / arg).read_text().splitlines()
        return sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())
    raise SystemExit(f"lock_stamp: unknown input {spec!r} (pyproject:EXTRAS or file:PATH)")


def stamp(specs: list[str]) -> str:
    body = json.dumps([describe(s) for s in specs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


if __name__ == "__main__":
    print(stamp(sys.argv[1:]))
