#!/usr/bin/env python3
"""Generate the broker's acl_file from docs/asyncapi.json and a device inventory; --check for drift.

Usage: scripts/gen_acl.py [INVENTORY] [--out FILE] [--check]
Defaults: config/broker-inventory.sample.toml -> config/mosquitto-test.acl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.mqtt.acl import Inventory, InventoryError, render  # noqa: E402
from scripts._generated import write_or_check  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inventory", type=Path, nargs="?", default=REPO / "config" / "broker-inventory.sample.toml")
    parser.add_argument("--asyncapi", type=Path, default=REPO / "docs" / "asyncapi.json")
    parser.add_argument("--out", type=Path, default=REPO / "config" / "mosquitto-test.acl")
    parser.add_argument("--check", action="store_true", help="Exit 1 if FILE differs from a fresh build.")
    args = parser.parse_args(argv)
    try:
        inventory = Inventory.load(args.inventory)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 78
    text = render(json.loads(args.asyncapi.read_text()), inventory, args.inventory.name)
    return write_or_check(args.out, text, check=args.check, stale_hint="; run scripts/gen_acl.py")


if __name__ == "__main__":
    sys.exit(main())
