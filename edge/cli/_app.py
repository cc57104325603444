"""The click application: the root group with lazily imported subcommands.

Kept out of ``edge.cli`` itself so that importing the package (the console script
does) costs nothing: `edge status` and `edge events tail` answer without click.
"""

from __future__ import annotations

import importlib

import click

from edge.cli._commands import COMMANDS


class LazyGroup(click.Group):
    """Sub-commands imported when they run: the core's (``lazy``), then the plug-ins' (entry
    points, looked up only for a name the core does not have)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, plugins: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}
        self.plugins = plugins

    def _plugin_commands(self) -> dict[str, str]:
        from edge.cli._commands import plugin_commands

        return plugin_commands() if self.plugins else {}

    def parse_args(self, ctx, args):
        ctx.meta["edge.json"] = "--json" in args  # meta is shared by every sub-command's context
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if not ctx.meta.get("edge.json"):
                raise
            # A script asked for JSON: it gets JSON on stdout for a misused command too (the
            # usual message still goes to stderr for the person reading the terminal).
            import json

            exc.show()
            click.echo(json.dumps({"ok": False, "error": exc.format_message(),
                                   "usage": exc.ctx.get_usage() if exc.ctx else None}))
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy, *self._plugin_commands()})

    def get_command(self, ctx, name):
        target = self.lazy.get(name) or (None if super().get_command(ctx, name) else
                                         self._plugin_commands().get(name))
        if not target:
            return super().get_command(ctx, name)
        command = _load(target)
        if self.plugins and isinstance(command, click.Group):
            from edge.cli._commands import plugin_subcommands

            for sub, where in plugin_subcommands(name).items():  # e.g. a driver's `xray quarantine` in a service's group
                command.commands.setdefault(sub, _load(where))
        return command


def _load(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, lazy=COMMANDS, plugins=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="EDGE_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (default /etc/edge/edge.toml, or $EDGE_CONFIG).")
@click.version_option(package_name="edge")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """edge: the gate and tablet daemon, and the field engineer's tools."""
    ctx.obj = {"config_path": config_path}
    if ctx.invoked_subcommand not in (None, "run"):  # `edge run` logs as its config says
        from edge.logs import configure_for_tools

        ctx.call_on_close(configure_for_tools())
