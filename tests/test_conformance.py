"""scripts/conformance.py against the reference ingest: it conforms; a lossy consumer does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.testing.central import IngestProcess

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "conformance.py"


def test_reference_ingest_conforms_and_a_broken_report_does_not(mosquitto, tmp_path):
    url = str(tmp_path / "central.db")
    ingest = IngestProcess(tmp_path, mosquitto.uri, url, "--linger-ms", "0").start()
    try:
        run = subprocess.run([sys.executable, str(SCRIPT), "--broker", mosquitto.uri, "--edge-central-db", url],
                             capture_output=True, text=True, timeout=120)
        result = json.loads(run.stdout)
        assert run.returncode == 0 and result["conforms"], result
        assert result["expected_events"] == 11
        # A consumer that lost everything (an empty report) is told so, event by event.
        empty = tmp_path / "empty.json"
        empty.write_text('{"events": [], "devices": []}')
        bad = subprocess.run([sys.executable, str(SCRIPT), "--broker", mosquitto.uri, "--wait-s", "0",
                              "--report-cmd", f"cat {empty}"], capture_output=True, text=True, timeout=120)
        verdict = json.loads(bad.stdout)
        assert bad.returncode == 1 and not verdict["conforms"]
        assert sum(p.startswith("missing:") for p in verdict["problems"]) == 11
    finally:
        ingest.kill()
