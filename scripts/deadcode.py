#!/usr/bin/env python3
"""Dead code: what vulture finds unused in the tree (settings: pyproject.toml [tool.vulture]).

Unused functions, methods, classes, attributes and unreachable code fail the run.
Vulture's "unused variable" reports are left out: unused locals are ruff's F841 already,
and the rest are fields of pydantic models and dataclasses (data that is serialized,
never read by name) and arguments a callback signature imposes. Names that are used
where vulture cannot see it are listed in scripts/deadcode_whitelist.py; entry points
(every pyproject.toml's [project.entry-points]) count as used without being listed.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from vulture.config import make_config
from vulture.core import Vulture


def entry_point_names(root: Path) -> list[str]:
    """The attribute each entry point loads ("module:attr" -> attr): found by name at run time."""
    names = []
    for pyproject in [root / "pyproject.toml", *sorted((root / "tests" / "data").glob("*/pyproject.toml"))]:
        groups = tomllib.loads(pyproject.read_text()).get("project", {}).get("entry-points", {})
        names += [target.partition(":")[2].split(".")[0] for group in groups.values() for target in group.values()]
    return [n for n in names if n]


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    config = make_config([], tomlfile=(root / "pyproject.toml").open("rb"))
    vulture = Vulture(ignore_names=config["ignore_names"] + entry_point_names(root),
                      ignore_decorators=config["ignore_decorators"])
    vulture.scavenge([str(root / p) for p in config["paths"]], exclude=config["exclude"])
    dead = [item for item in vulture.get_unused_code(min_confidence=config["min_confidence"])
            if item.typ != "variable"]
    for item in dead:
        print(item.get_report(), file=sys.stderr)
    if dead:
        print(f"deadcode: {len(dead)} unused; delete it, or list it in scripts/deadcode_whitelist.py "
              "with who uses it", file=sys.stderr)
    return 1 if dead else 0


if __name__ == "__main__":
    sys.exit(main())
