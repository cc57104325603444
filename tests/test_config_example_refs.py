"""The example configs point readers at sections of the docs: each section they name exists.

config/gate.example.toml sent people to README sections ("X-ray scanners", "Turnstiles",
"Biometrics", "Gate policy") that had moved to docs/gate.md; the example is what install.sh
copies to /etc/edge/edge.toml, so its pointers are the first docs a field engineer follows."""

from __future__ import annotations

import re

from tests.conftest import REPO

_REF = re.compile(r'(README(?:\.md)?|docs/[\w./-]+\.md) "([^"]+)"')


def _headings(doc: str) -> set[str]:
    path = REPO / ("README.md" if doc.startswith("README") else doc)
    return {line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")}


def test_every_section_an_example_config_names_exists():
    refs = [(cfg.name, doc, section) for cfg in sorted((REPO / "config").iterdir()) if cfg.is_file()
            for doc, section in _REF.findall(cfg.read_text())]
    assert refs, "the pattern finds the examples' pointers"
    missing = [ref for ref in refs if ref[2] not in _headings(ref[1])]
    assert not missing, missing
