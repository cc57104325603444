"""Writing a generated file, or checking that the committed one is current: what every
``scripts/gen_*.py --check`` does the same way (their tests run the check)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(out: Path, text: str, *, check: bool, stale_hint: str) -> int:
    """``check``: exit status 1 and ``stale_hint`` when ``out`` differs from ``text``, else 0.
    Otherwise write ``text`` to ``out``."""
    if check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date{stale_hint}", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text)
    print(f"wrote {out}")
    return 0
