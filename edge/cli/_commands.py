"""Which command runs which code: the core's command groups, and those plug-ins register."""

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
    "drivers": "edge.cli.drivers:drivers_group",
    "keys": "edge.cli.keys:keys",
    "cmd": "edge.cli.cmd:cmd",
    "doctor": "edge.cli.doctor:doctor",
    "update": "edge.cli.update:update",
}


def plugin_commands() -> dict[str, str]:
    """Command groups that installed packages register under the ``edge.cli`` entry point."""
    from edge.registry import registered

    return {ep.name: ep.value for ep in registered("edge.cli")
            if ep.name not in COMMANDS and "." not in ep.name}


def plugin_subcommands(group: str) -> dict[str, str]:
    """Sub-commands a package adds to one of the core's groups: entry point ``GROUP.NAME``."""
    from edge.registry import registered

    return {ep.name.split(".", 1)[1]: ep.value for ep in registered("edge.cli")
            if ep.name.startswith(f"{group}.")}
