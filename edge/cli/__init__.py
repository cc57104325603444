"""The ``edge`` command line: one small module per command group, imported on use.

click rather than typer: it is one light dependency (typer pulls click and
rich in and imports slower), its CliRunner tests exit codes and output
exactly, and lazy subcommands keep ``edge status`` fast on a slow device.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute"; nothing is imported until the command runs.
COMMANDS = {
    "run": "edge.cli.run:run",
    "status": "edge.cli.status:status",
    "outbox": "edge.cli.outbox:outbox",
    "events": "edge.cli.events:events",
    "audit": "edge.cli.audit:audit",
    "config": "edge.cli.config_cmd:config",
    "drivers": "edge.cli.drivers:drivers",
    "turnstile": "edge.cli.turnstile:turnstile",
    "sim": "edge.cli.sim:sim",
    "xray": "edge.cli.xray:xray",
    "biometrics": "edge.cli.biometrics:biometrics",
    "keys": "edge.cli.keys:keys",
    "cmd": "edge.cli.cmd:cmd",
    "doctor": "edge.cli.doctor:doctor",
}


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="EDGE_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (default /etc/edge/edge.toml, or $EDGE_CONFIG).")
@click.version_option(package_name="edge")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """edge: the gate and tablet daemon, and the field engineer's tools."""
    ctx.obj = {"config_path": config_path}


def main() -> None:
    cli(prog_name="edge")
