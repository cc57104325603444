"""The ``edge …`` command lines shown in README.md and docs/*.md, made runnable.

A doc shows commands as people read them: ``[--json]`` for an option, ``a|b`` for a
choice, ``ID`` or ``IMAGE...`` for a value. Each line becomes one or more argv lists:
every optional group is taken (the fullest form), every choice is run, every
placeholder gets a real value from the test's site. A trailing ``# ... exit 1 ...``
announces a non-zero exit that the doc expects.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Command words that run until stopped: success is "still running after a few seconds".
LONG_RUNNING = (("run",), ("sim", "turnstile"), ("content-serve",), ("events", "tail", "--follow"))
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.\.\.|\.[a-z]+)?$")


@dataclass
class Example:
    doc: str          # file name
    line: int         # 1-based line of the command's first line
    text: str         # as shown, continuation lines joined
    comment: str      # the trailing comment, if any
    allowed_exits: set[int] = field(default_factory=lambda: {0})

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def collect(paths: list[Path]) -> list[Example]:
    """Every line in a code block (indented or fenced) that starts with ``edge``."""
    examples = []
    for path in paths:
        lines = path.read_text().splitlines()
        fenced, i = False, 0
        while i < len(lines):
            raw = lines[i]
            if raw.lstrip().startswith("```"):
                fenced = not fenced
                i += 1
                continue
            start = i
            code = fenced or raw.startswith("    ")
            text = raw.strip().removeprefix("$ ")
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            if code and (text.startswith("edge ") or text == "edge"):
                command, comment = _split_comment(text)
                ex = Example(path.name, start + 1, command, comment)
                ex.allowed_exits |= {int(n) for n in re.findall(r"\bexits? (\d+)", comment)}
                examples.append(ex)
    return examples


def _split_comment(text: str) -> tuple[str, str]:
    """The command and its trailing ``# comment`` (a '#' outside quotes after a space)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i and text[i - 1] == " ":
            return text[:i].rstrip(), text[i + 1:].strip()
    return text, ""


def expand(command: str, values: dict[str, str], rewrites: dict[str, str]) -> list[list[str]]:
    """argv lists (without the leading ``edge``) for one shown command."""
    for old, new in rewrites.items():
        command = command.replace(old, new)
    forms = [command]
    if "[--json]" in command:  # people read the text, scripts the JSON: run both
        forms.append(command.replace("[--json]", ""))
    return [argv for form in forms for argv in _expand_form(form, values)]


def _expand_form(command: str, values: dict[str, str]) -> list[list[str]]:
    command = re.sub(r"\[([^\[\]]*)\]", r"\1", command)  # every optional group, taken
    words = shlex.split(command)[1:]
    choices = [_choices(word) for word in words]
    runs = []
    for combo in itertools.product(*choices):
        argv, prev = [], None
        for word in combo:
            if word and (_PLACEHOLDER.match(word) or word == "..."):
                key = f"{prev} {word}" if f"{prev} {word}" in values else word
                if key not in values:
                    raise KeyError(f"no value for placeholder {word!r} (after {prev!r}) in {command!r}: "
                                   f"add one to the docs-examples test")
                argv.append(values[key])
            elif word:
                argv.append(word)
            prev = word
        runs.append(argv)
    return runs


def _choices(word: str) -> list[str]:
    """``lock|unlock`` -> both; ``--grant|--deny`` -> both; anything else -> itself."""
    if "|" in word and not word.startswith(("'", '"')) and "=" not in word and "*" not in word:
        return word.split("|")
    return [word]


def long_running(argv: list[str]) -> bool:
    words = [w for w in argv if w != "--config" and not w.endswith(".toml")]
    return any(all(w in words for w in pattern) and words[: len(pattern)][:1] == [pattern[0]]
               for pattern in LONG_RUNNING)
