"""Scenario scripts for the turnstile simulator: one step per line (or separated by ';').

    passage in 3        three passages inward          forced in | tailgate in | wrong_way out
    held_open           door held open                 tamper on|off   emergency on|off
    fault 7             fault code 7 (0 clears)        noise 32        32 random bytes on the line
    nak 2               NAK the next 2 commands        drop 1          ignore the next command
    slow 0.5            reply 0.5 s late (0: normal)   mute on|off     answer nothing at all
    unplug 3            pull the cable for 3 s         unplug / replug   (until replug)
    wait 1.5            pause                          auto_pass on|off  walk through after a grant
    # comment           any step may end in @N to act on bus address N (default 1)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

_DIRECTION = ("in", "out")
_SWITCH = {"on": 1, "off": 0}
# step -> kinds of its arguments: d direction, i int, f float, s on/off; '?' marks an optional tail
_SYNTAX = {
    "passage": "d?i", "forced": "d", "tailgate": "d", "wrong_way": "d", "held_open": "",
    "tamper": "s", "emergency": "s", "fault": "i", "noise": "?i", "nak": "?i", "drop": "?i",
    "slow": "f", "mute": "s", "unplug": "?f", "replug": "", "wait": "f", "auto_pass": "s",
}


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple
    address: int = 1
    line: int = 0


def parse(text: str) -> list[Step]:
    """Steps of a script; ValueError naming the line and the expected form."""
    steps = []
    for lineno, raw in enumerate(text.replace(";", "\n").splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if words:
            steps.append(_parse_step(words, lineno))
    return steps


def _parse_step(words: list[str], lineno: int) -> Step:
    address = 1
    if words[-1].startswith("@"):
        address = _convert("i", words.pop()[1:], lineno, words[0])
    name, values = words[0], words[1:]
    if name not in _SYNTAX:
        raise ValueError(f"step {lineno}: unknown step {name!r}; expected one of: {', '.join(_SYNTAX)}")
    kinds = _SYNTAX[name]
    required = kinds.split("?")[0].replace("?", "")
    allowed = kinds.replace("?", "")
    if not len(required) <= len(values) <= len(allowed):
        raise ValueError(f"step {lineno}: {name!r} takes {_describe(kinds)}; got {' '.join(values) or 'nothing'}")
    args = tuple(_convert(k, v, lineno, name) for k, v in zip(allowed, values, strict=False))
    return Step(name, args, address, lineno)


def _describe(kinds: str) -> str:
    names = {"d": "in|out", "i": "a whole number", "f": "seconds", "s": "on|off"}
    if not kinds:
        return "no arguments"
    required, _, optional = kinds.partition("?")
    parts = [names[k] for k in required] + [f"[{names[k]}]" for k in optional]
    return " ".join(parts)


def _convert(kind: str, value: str, lineno: int, name: str):
    try:
        if kind == "d":
            if value not in _DIRECTION:
                raise ValueError
            return value
        if kind == "s":
            return _SWITCH[value]
        number = int(value) if kind == "i" else float(value)
        if number < 0:
            raise ValueError
        return number
    except (ValueError, KeyError):
        raise ValueError(f"step {lineno}: {name!r}: {value!r} is not {_describe(kind)}") from None


def run(sim, steps: list[Step], stop: threading.Event, log=lambda step: None) -> None:
    """Play ``steps`` against a running simulator; returns early when ``stop`` is set."""
    for step in steps:
        if stop.is_set():
            return
        log(step)
        _play(sim, step, stop)


def _play(sim, step: Step, stop: threading.Event) -> None:
    name, a, addr = step.name, step.args, step.address
    if name == "passage":
        sim.passage(a[0], a[1] if len(a) > 1 else 1, address=addr)
    elif name in ("forced", "tailgate", "wrong_way"):
        sim.alarm(name, a[0], address=addr)
    elif name == "held_open":
        sim.alarm(name, address=addr)
    elif name in ("tamper", "emergency", "fault"):
        sim.alarm(name, arg=a[0], address=addr)
    elif name == "noise":
        sim.noise(a[0] if a else 16)
    elif name == "nak":
        sim.nak_next(a[0] if a else 1)
    elif name == "drop":
        sim.drop_next(a[0] if a else 1)
    elif name == "slow":
        sim.slow_s = a[0]
    elif name == "mute":
        sim.mute(bool(a[0]))
    elif name == "unplug":
        sim.unplug()
        if a:
            stop.wait(a[0])
            sim.replug()
    elif name == "replug":
        sim.replug()
    elif name == "wait":
        stop.wait(a[0])
    elif name == "auto_pass":
        sim.auto_pass = bool(a[0])
