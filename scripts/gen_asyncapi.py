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

from edge.asyncapi import render  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "asyncapi.json")
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file differs from the models.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date with the models; run scripts/gen_asyncapi.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
