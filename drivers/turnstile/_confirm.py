"""Read back what a barrier command did: the lane's reported mode is the controller's confirmed mode.

An acknowledgement alone is not proof: on ``bcc-p2p`` a bare ACK byte cannot
be told from a stray 0x06 on the line, and after a command with no answer its
effect is unknown. So after every mode change the driver asks the controller
for its status and reports the mode it gives; a mismatch fails the command.
"""

from __future__ import annotations

from drivers.turnstile import messages as m

#: The mode each barrier command must leave the controller in.
EXPECTED_MODE: dict[type, m.Mode] = {
    m.Lock: m.Mode.LOCKED, m.Unlock: m.Mode.FREE, m.Lockdown: m.Mode.LOCKDOWN, m.Release: m.Mode.LOCKED,
}


def expected_mode(request) -> m.Mode | None:
    return EXPECTED_MODE.get(type(request))


def mismatch(name: str, address: int, want: m.Mode, status: m.Status) -> str | None:
    """Why the read-back does not confirm the command, or None when it does."""
    if status.mode == want:
        return None
    emergency = "; the fire-alarm free swing is active" if status.emergency else ""
    return (f"{name} NOT confirmed: the controller at address {address} acknowledged, but reports mode "
            f"{status.mode.name.lower()}, not {want.name.lower()}{emergency} (a stray or forged "
            f"acknowledgement?); the lane is {status.mode.name.lower()}")


def describe(status: m.Status | None) -> str:
    """The controller's state as read after a command of unknown outcome."""
    if status is None:
        return "its state could not be read either"
    return f"it now reports mode {status.mode.name.lower()}" + (", emergency active" if status.emergency else "")
