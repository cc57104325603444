"""The ``edge`` command line: one small module per command group, imported on use.

click rather than typer: it is one light dependency (typer pulls click and
rich in and imports slower), its CliRunner tests exit codes and output
exactly, and lazy subcommands keep ``edge status`` fast on a slow device.
The click group lives in ``_app`` and is imported only when needed: ``edge status``
and ``edge events tail`` take a click-free fast path (``_fast``).
"""

from __future__ import annotations

from edge.cli._commands import COMMANDS, plugin_commands, plugin_subcommands

__all__ = ["COMMANDS", "main", "plugin_commands", "plugin_subcommands"]

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
