#!/usr/bin/env python3
"""Generate docs/asyncapi.json (AsyncAPI 3.0) from the pydantic models; --check to detect drift.

Usage: scripts/gen_asyncapi.py [--check] [--out docs/asyncapi.json]
JSON rather than YAML: every YAML 1.2 parser reads it, and it needs no extra dependency.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.asyncapi import render, schema_files  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "asyncapi.json")
    parser.add_argument("--schemas", type=Path, default=REPO / "docs" / "schemas",
                        help="Folder of the standalone JSON Schema files (also generated).")
    parser.add_argument("--check", action="store_true", help="Exit 1 if the files differ from the models.")
    args = parser.parse_args(argv)
    wanted = {args.out: render(), **{args.schemas / rel: text for rel, text in schema_files().items()}}
    if args.check:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
        stray = sorted(set(args.schemas.rglob("*.json")) - set(wanted)) if args.schemas.exists() else []
        for path in stale + stray:
            print(f"{path} is out of date with the models; run scripts/gen_asyncapi.py", file=sys.stderr)
        if stale or stray:
            return 1
        print(f"{args.out} and {len(wanted) - 1} schema files are up to date")
        return 0
    if args.schemas.exists():
        for old in args.schemas.rglob("*.json"):
            if old not in wanted:
                old.unlink()  # a model that is gone takes its file with it
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {args.out} and {len(wanted) - 1} schema files under {args.schemas}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
