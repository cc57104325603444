"""Effect classes: what a command does to the gate, which decides how many people it needs.

Every command target declares, for each command it accepts, one of:

- ``observe``  reads only (status, ping);
- ``operate``  reversible, weakens no barrier; closing a gate is here too (lock,
  lockdown, deny, out_of_service), so an officer can always close one quickly;
- ``barrier``  opens, unlocks, grants passage, or changes a mode or policy so that
  fewer checks apply, or disables an alarm or a sensor;
- ``erase``    destroys records (purge, wipe).

``barrier`` and ``erase`` need two people (two signatures from distinct keys
with the ``command`` role, or two local operators); anything undeclared is
``barrier``. A declaration is a class name, or ``ByArg`` when the effect depends
on an argument (``mode``: lockdown is ``operate``, free_passage is ``barrier``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

EFFECTS = ("observe", "operate", "barrier", "erase")
TWO_PERSON = frozenset({"barrier", "erase"})
UNKNOWN = "barrier"


@dataclass(frozen=True)
class ByArg:
    """The effect chosen by one argument's value; any other value (or none) is ``default``."""

    arg: str
    values: Mapping[str, str] = field(default_factory=dict)
    default: str = UNKNOWN

    def __call__(self, args: Mapping[str, Any]) -> str:
        value = args.get(self.arg) if isinstance(args, Mapping) else None
        return self.values.get(value, self.default) if isinstance(value, str) else self.default

    def describe(self) -> str:
        parts = [f"{self.arg}={v}: {e}" for v, e in self.values.items()]
        return ", ".join([*parts, f"otherwise {self.default}"])


Effect = Union[str, ByArg]  # noqa: UP007 (a runtime alias)
Effects = Mapping[str, Effect]


def effect_of(declared: Effects, name: str, args: Mapping[str, Any]) -> str:
    """The effect class of one command; ``barrier`` when undeclared or unknown."""
    effect = declared.get(name, UNKNOWN)
    if isinstance(effect, ByArg):
        effect = effect(args)
    return effect if effect in EFFECTS else UNKNOWN


def check_declared(target: str, declared: Effects) -> None:
    """Refuse a declaration that names no class we know (a programming error in a target)."""
    for name, effect in declared.items():
        values = [effect.default, *effect.values.values()] if isinstance(effect, ByArg) else [effect]
        for value in values:
            if value not in EFFECTS:
                raise ValueError(f"target {target!r} declares command {name!r} with effect {value!r}; "
                                 f"effects are {', '.join(EFFECTS)}")
