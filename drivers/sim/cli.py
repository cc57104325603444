"""``edge sim …``: device simulators for engineers without hardware (and for demos)."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from edge.cli._common import EX_USAGE, fail, json_option


@click.group()
def sim() -> None:
    """Simulated devices that speak the real wire protocols."""


def _help_steps(ctx: click.Context, _param, value: bool) -> None:
    """Eager, like --help: it answers before --codec is required (every error message points here)."""
    if value:
        from drivers.sim import turnstile_scenario as scen

        click.echo(scen.__doc__)
        ctx.exit(0)


@sim.command("turnstile")
@click.option("--codec", type=click.Choice(["rs485-bus", "bcc-p2p"]), required=True,
              help="Wire protocol of the simulated controller.")
@click.option("--link", "link_path", type=click.Path(dir_okay=False),
              help="Stable path of the serial port (a symlink to the pty); "
                   "default: edge-sim-turnstile-CODEC in the temp directory.")
@click.option("--baud", "baudrate", type=click.IntRange(300, 4_000_000), default=9600, show_default=True,
              help="Bytes are paced at this rate, like a real line.")
@click.option("--addresses", default="1", show_default=True,
              help="rs485-bus: comma-separated bus addresses of the simulated controllers.")
@click.option("--scenario", help="Steps to play, separated by ';' (see --help-steps).")
@click.option("--script", type=click.File("r"), help="A file of scenario steps, one per line.")
@click.option("--auto-pass", is_flag=True, help="Someone walks through after every grant.")
@click.option("--echo", is_flag=True, help="Echo the host's bytes back, like a 2-wire RS-485 adapter.")
@click.option("--help-steps", is_flag=True, is_eager=True, expose_value=False, callback=_help_steps,
              help="List the scenario steps and exit.")
@json_option
def turnstile(codec, link_path, baudrate, addresses, scenario, script, auto_pass, echo, as_json) -> None:
    """Run a simulated turnstile controller on a pty until Ctrl-C.

    Point a driver at the printed path (port = "..."). While it runs, type scenario
    steps on stdin (e.g. `passage in`, `forced out`, `unplug 3`, `emergency on`).
    """
    from drivers.sim import turnstile_scenario as scen

    address_list = _addresses(addresses, as_json)
    steps = []
    for option, text in (("--script", script.read() if script else ""), ("--scenario", scenario or "")):
        try:
            steps += scen.parse(text)
        except ValueError as exc:
            fail(f"{option}: {exc} (see `edge sim turnstile --help-steps`)", EX_USAGE, as_json=as_json)
    path = Path(link_path or Path(tempfile.gettempdir()) / f"edge-sim-turnstile-{codec}")
    simulator = _start(codec, path, baudrate, address_list, auto_pass, echo, as_json)
    stop = threading.Event()
    # Explicitly, also SIGINT: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if steps:
        threading.Thread(target=scen.run, args=(simulator, steps, stop, _echo_step), daemon=True).start()
    if sys.stdin.isatty():
        threading.Thread(target=_interactive, args=(simulator, stop), daemon=True).start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
        click.echo("simulator stopped", err=True)


def _addresses(text: str, as_json: bool) -> tuple[int, ...]:
    try:
        out = tuple(int(a) for a in text.split(","))
    except ValueError:
        out = ()
    if not out or not all(1 <= a <= 32 for a in out):
        fail(f"--addresses {text!r}: expected bus addresses 1..32 separated by commas, e.g. 1,2,5",
             EX_USAGE, as_json=as_json)
    return out


def _start(codec, path, baudrate, addresses, auto_pass, echo, as_json):
    from drivers.sim.turnstile import TurnstileSim

    try:
        simulator = TurnstileSim(codec, path, baudrate=baudrate, addresses=addresses,
                                 auto_pass=auto_pass, echo=echo).start()
    except (OSError, ValueError) as exc:
        fail(f"cannot start the simulator at {path}: {exc}", as_json=as_json)
    info = {"codec": codec, "port": str(path), "pty": str(path.resolve()), "baudrate": baudrate,
            "addresses": list(simulator.devices)}
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"turnstile simulator: {codec} at {baudrate} baud, "
                   f"address(es) {','.join(map(str, info['addresses']))}")
        click.echo(f"port: {info['port']} -> {info['pty']}")
        click.echo(f'configure the driver with: kind = "turnstile.serial", codec = "{codec}", '
                   f'port = "{info["port"]}", baudrate = {baudrate}')
        click.echo("type scenario steps (e.g. `passage in`, `unplug 3`; `help`), Ctrl-C to stop")
    sys.stdout.flush()
    return simulator


def _interactive(simulator, stop: threading.Event) -> None:
    from drivers.sim import turnstile_scenario as scen

    for line in sys.stdin:
        if line.strip() in ("help", "?"):
            click.echo(scen.__doc__)
            continue
        try:
            steps = scen.parse(line)
        except ValueError as exc:
            click.echo(f"error: {exc}", err=True)
            continue
        threading.Thread(target=scen.run, args=(simulator, steps, stop, _echo_step), daemon=True).start()


def _echo_step(step) -> None:
    at = f" @{step.address}" if step.address != 1 else ""
    click.echo(f"> {step.name} {' '.join(map(str, step.args))}{at}".rstrip(), err=True)
