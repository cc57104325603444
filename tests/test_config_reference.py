"""docs/configuration.md is generated from the settings models and cannot go stale unnoticed.

The generator walks whatever model edge.config hands out and every driver registered under
``edge.drivers``; these tests check the committed page against them, show that a changed
model makes ``--check`` fail, and check what the page claims: every key described, every
``allow_*`` option marked dangerous, and the environment variable names it prints really
set those keys.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from edge.driver import Driver, DriverConfig
from tests._docs_examples import collect
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "gen_config_reference.py"
PAGE = REPO / "docs" / "configuration.md"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _check(out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)


def test_the_committed_page_is_up_to_date():
    check = _check(PAGE)
    assert check.returncode == 0, check.stderr  # it says: run scripts/gen_config_reference.py
    assert PAGE.read_text() == gen.render()


def test_a_page_from_a_changed_model_is_reported_stale(tmp_path):
    """Negative control: the page of a Settings whose one description differs fails --check."""
    settings = gen.settings_model()
    old = settings.model_fields["site"]
    changed = create_model("Settings", __base__=settings,
                           site=(str, Field(pattern=old.metadata[0].pattern, description="Changed.")))
    text = gen.render(settings=changed)
    assert text != PAGE.read_text() and "| Changed. |" in text
    stale = tmp_path / "configuration.md"
    stale.write_text(text)
    check = _check(stale)
    assert check.returncode == 1 and "out of date" in check.stderr
    stale.write_text(PAGE.read_text())  # the same file with the real page passes: the check compares
    assert _check(stale).returncode == 0


def test_new_sections_and_driver_kinds_appear_without_touching_the_generator():
    class Doorbell(BaseModel):
        """Bells at the visitors' entrance."""

        model_config = ConfigDict(extra="forbid")
        volume: int = Field(default=3, ge=1, le=10, description="How loud.")

    class BellDriver(Driver):
        """Rings a bell."""

        class Config(DriverConfig):
            chime: str = Field(description="The tune.")

    settings = create_model("Settings", __base__=gen.settings_model(),
                            doorbell=(Doorbell, Field(default_factory=Doorbell)))
    text = gen.render(settings=settings, kinds=[("acme.bell", BellDriver)])
    assert "### `[doorbell]`\n\nBells at the visitors' entrance." in text
    assert "| `doorbell.volume` | integer from 1 to 10 | `3` | `EDGE_DOORBELL__VOLUME` | How loud. |" in text
    assert "### `acme.bell`\n\nRings a bell." in text
    assert "| `chime` | string | **required** |  | The tune. |" in text


def test_every_registered_driver_kind_has_its_section():
    kinds = [kind for kind, _ in gen.driver_kinds()]
    assert len(kinds) >= 9  # the built-in families; a third party's show up too
    page = PAGE.read_text()
    assert all(f"\n### `{kind}`\n" in page for kind in kinds), kinds


def test_every_key_has_a_description():
    assert gen.undescribed() == []


def _unmarked_allow(sections) -> list[str]:
    """``allow_*`` options (the house name of an unsafe opt-in) whose description does not say DANGEROUS."""
    return [row.key for s in sections for row in s.rows
            if row.key.rsplit(".", 1)[-1].startswith("allow_") and not row.dangerous]


def test_every_unsafe_opt_in_is_marked_dangerous():
    sections = gen.settings_sections(gen.settings_model()) + gen.driver_sections(gen.driver_kinds())
    assert _unmarked_allow(sections) == []
    marked = {(s.kind, r.key) for s in sections for r in s.rows if r.dangerous}
    assert {("", "commands.allow_single_person_override"), ("reader.osdp", "allow_plaintext"),
            ("xray.stream", "allow_unauthenticated")} <= marked
    page = PAGE.read_text()
    assert "- `allow_plaintext` (driver kind `reader.osdp`)" in page
    assert "| `allow_plaintext` **⚠ dangerous** |" in page

    class Lax(DriverConfig):  # positive control: an unmarked allow_ option is found
        allow_anything: bool = Field(default=False, description="Accept anything.")

    class LaxDriver(Driver):
        Config = Lax

    assert _unmarked_allow(gen.driver_sections([("acme.lax", LaxDriver)])) == ["allow_anything"]


_ROW = re.compile(r"^\| `(?P<key>[^`]+)`[^|]* \| (?P<type>[^|]+) \| [^|]+ \| `(?P<env>EDGE_[A-Z0-9_]+)`")


def test_the_environment_variables_shown_set_their_keys(monkeypatch):
    """Each numeric key's variable, set to a non-number, fails validation at that key: the name is real."""
    rows = [m for line in PAGE.read_text().splitlines() if (m := _ROW.match(line))]
    numeric = [m for m in rows if m["type"].startswith(("integer", "number"))]
    assert len(numeric) > 50
    settings = gen.settings_model()
    for m in numeric:
        with monkeypatch.context() as env:
            env.setenv(m["env"], "not-a-number")
            with pytest.raises(ValidationError) as info:
                settings(device_id="gate-1", site="site-a", role="gate")
            assert [".".join(map(str, e["loc"])) for e in info.value.errors()] == [m["key"]], m["env"]
    monkeypatch.setenv("EDGE_MQTT__BROKERS", '["mqtts://broker.example:8883"]')  # a list, as JSON
    assert settings(device_id="gate-1", site="site-a", role="gate").mqtt.brokers == ["mqtts://broker.example:8883"]


def test_the_page_shows_no_command_for_the_docs_examples_test():
    """tests/test_docs_examples.py runs every `edge ...` line of a code block in docs/*.md."""
    assert collect([PAGE]) == []
