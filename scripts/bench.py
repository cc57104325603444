#!/usr/bin/env python3
"""Benchmarks: ``scripts/bench.py NAME [--json] [options]`` prints one JSON object.

Each benchmark lives in ``scripts/benchmarks/NAME.py`` with ``add_arguments(parser)``
(optional) and ``run(args) -> dict``. Keys name their units (``events_per_s``,
``latency_ms``, ``rss_mb``); ``ratio`` is ours divided by the limit measured in
the same run, so it holds on a noisy machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def available() -> list[str]:
    return sorted(p.stem for p in (HERE / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


def main() -> int:
    names = available()
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print(f"usage: bench.py NAME [--json] [options]; NAME is one of: {', '.join(names)}", file=sys.stderr)
        return 2
    name = sys.argv[1]
    module = importlib.import_module(f"benchmarks.{name}")
    parser = argparse.ArgumentParser(prog=f"bench.py {name}", description=module.__doc__)
    parser.add_argument("--json", action="store_true", help="Print only the JSON result.")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = parser.parse_args(sys.argv[2:])
    from edge.logs import configure

    configure("warning", "console", stream=sys.stderr)  # stdout carries the JSON result alone
    result = {"benchmark": name, **module.run(args)}
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
