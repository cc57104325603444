"""Files central implementers build from: standalone JSON Schemas and signing test vectors."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from edge.asyncapi import schema_files
from edge.contract import CHANNELS, EVENT_PAYLOADS

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "docs" / "schemas"
VECTORS = REPO / "docs" / "signing-vectors.json"


def test_schema_files_match_the_models_and_cover_every_message_and_event_type():
    generated = schema_files()
    on_disk = {str(p.relative_to(SCHEMAS)): p.read_text() for p in SCHEMAS.rglob("*.json")}
    assert on_disk == generated, "docs/schemas drifted: run scripts/gen_asyncapi.py and commit"
    assert {f"messages/{c.id}.json" for c in CHANNELS} | {f"events/{t}.json" for t in EVENT_PAYLOADS} \
        | {"Event.json"} == set(on_disk)
    event = json.loads(on_disk["Event.json"])
    assert event["$schema"].endswith("2020-12/schema") and "seq" in event["required"]


def test_a_stray_or_stale_schema_file_is_detected(tmp_path):
    folder = tmp_path / "schemas"
    for rel, text in schema_files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (folder / "events" / "gone.type.json").write_text("{}")
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_asyncapi.py"), "--check",
                            "--schemas", str(folder)], capture_output=True, text=True)
    assert check.returncode == 1 and "gone.type.json" in check.stderr


def test_signing_vectors_are_what_edge_signs_and_verifies():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edge.events import canonical_json
    from edge.signing import verify

    check = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_signing_vectors.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    doc = json.loads(VECTORS.read_text())
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["key"]["public_raw_hex"]))
    for v in doc["vectors"]:
        without = {k: val for k, val in v["document"].items() if k != "signatures"}
        assert canonical_json(without).decode() == v["canonical_utf8"]
        public.verify(base64.b64decode(v["signature_b64"]), v["canonical_utf8"].encode())
        assert verify(v["signed_document"], {doc["key"]["key_id"]: public}) == [doc["key"]["key_id"]]
    # The command vector is one a device parses (implementers copy it as a template).
    from edge.commands.model import Command

    command = next(v for v in doc["vectors"] if v["name"] == "command")
    assert Command.model_validate(command["signed_document"]).target == "edge"
