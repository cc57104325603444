"""The ``edge`` command line: one small module per command group, imported on use.

click rather than typer: it is one light dependency (typer pulls click and
rich in and imports slower), its CliRunner tests exit codes and output
exactly, and lazy subcommands keep ``edge status`` fast on a slow device.
The click group lives in ``_app`` and is imported only when needed: ``edge status``
and ``edge events tail`` take a click-free fast path (``_fast``).
"""

from __future__ import annotations

# name -> "module:attribute"; nothing is imported until the command runs. Services and driver
# families add their own groups (gate, xray, messages, turnstile, biometrics, ...) under the
# ``edge.cli`` entry point: the core names none of them.
COMMANDS = {
    "run": "edge.cli.run:run",
    "status": "edge.cli.status:status",
    "outbox": "edge.cli.outbox:outbox",
    "events": "edge.cli.events:events",
    "audit": "edge.cli.audit:audit",
    "config": "edge.cli.config_cmd:config",
    "drivers": "edge.cli.drivers:drivers",
    "keys": "edge.cli.keys:keys",
    "cmd": "edge.cli.cmd:cmd",
    "doctor": "edge.cli.doctor:doctor",
    "update": "edge.cli.update:update",
}


def plugin_commands() -> dict[str, str]:
    """Command groups that installed packages register under the ``edge.cli`` entry point."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="edge.cli")
            if ep.name not in COMMANDS and "." not in ep.name}


def plugin_subcommands(group: str) -> dict[str, str]:
    """Sub-commands a package adds to one of the core's groups: entry point ``GROUP.NAME``."""
    from importlib.metadata import entry_points

    return {ep.name.split(".", 1)[1]: ep.value for ep in entry_points(group="edge.cli")
            if ep.name.startswith(f"{group}.")}


def __getattr__(name: str):
    if name in ("cli", "LazyGroup"):  # importing click costs ~80 ms of CPU: only when used
        from edge.cli import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'edge.cli' has no attribute {name!r}")


def main() -> None:
    import sys

    from edge.cli import _fast

    _fast.run(sys.argv[1:])  # status and events tail without click; exits when it handled them
    from edge.cli import _app

    _app.cli(prog_name="edge")
