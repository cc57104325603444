#!/usr/bin/env python3
"""Long fuzz run: ``scripts/fuzz.py [--examples N] [--only daemon|inputs] [--json]``.

Runs the issue-19 fuzz harness (tests/security/test_fuzz_daemon.py and
test_fuzz_inputs.py) with N hypothesis examples per input surface instead of
the suite's few dozen: the real daemon and broker for every received topic and
local API route, each codec, each scanner format. Prints one JSON object
(``--json``) or a summary line; exit 0 when nothing was found.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {"daemon": "tests/security/test_fuzz_daemon.py", "inputs": "tests/security/test_fuzz_inputs.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="hypothesis examples per surface (default 1000)")
    parser.add_argument("--only", choices=sorted(FILES), help="run one half of the harness")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    files = [FILES[args.only]] if args.only else list(FILES.values())
    env = {**os.environ, "EDGE_FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *files], cwd=ROOT, env=env,
                          capture_output=args.json, text=True)
    report = {"examples_per_surface": args.examples, "files": files, "ok": proc.returncode == 0,
              "took_s": round(time.monotonic() - started, 1)}
    if args.json:
        lines = proc.stdout.strip().splitlines()
        report["summary"] = (lines or [""])[-1]
        report["failed"] = [line.split()[1] for line in lines if line.startswith("FAILED ")]
        print(json.dumps(report))
    else:
        print(f"fuzz: {'nothing found' if report['ok'] else 'FAILURES (see above)'} "
              f"with {args.examples} examples per surface in {report['took_s']} s")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
