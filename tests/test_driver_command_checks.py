"""Each driver's ``check_command``: what its ``handle`` would refuse whatever the device's state
(an unknown name, a bad argument) is refused before a request is held for a second operator.

In-process, on the driver classes and their validated configs: the check needs no device.
The same requests through a real daemon: tests/security/test_local_two_person.py.
"""

from __future__ import annotations

import pytest

from drivers.camera.driver import FaceCameraDriver
from drivers.readers.driver import OsdpReaderDriver
from drivers.sim.heartbeat import HeartbeatDriver
from drivers.sim.turnstile_kind import SimTurnstileDriver
from drivers.xray.folder import XrayFolderDriver
from edge.errors import CommandError


def _config(cls, **options):
    return cls.Config.model_validate({"name": "d1", "kind": "k", **options})


CASES = [  # (driver, its options, refused: (name, args, what the error says), accepted: (name, args))
    (HeartbeatDriver, {}, [("pnig", {}, "does not support 'pnig'; supported: ping"),
                           ("ping", {"loud": True}, "loud: unknown argument (ping accepts: no arguments)")],
     [("ping", {})]),
    (SimTurnstileDriver, {"codec": "rs485-bus", "path": "/nonexistent/tty"},
     [("stpe", {}, "supports 'step' and 'ping', not 'stpe'"),
      ("step", {}, "steps: Field required"),
      ("step", {"steps": "levitate"}, "unknown step 'levitate'")],
     [("step", {"steps": "passage in; forced out"}), ("ping", {})]),
    (FaceCameraDriver, {"source": "/nonexistent/frames"},
     [("forget_entyr", {"key": "BK-1"}, "does not support 'forget_entyr'; supported: verify, forget_entry, status"),
      ("forget_entry", {}, "forget_entry needs 'key' (the booking id) or 'all': true"),
      ("forget_entry", {"key": "BK-1", "al": True}, "al: unknown argument"),
      ("verify", {"booking_id": "BK-1"}, "subject_id: Field required"),
      ("verify", {"subject_id": "V-1", "entry": "swap"}, "entry: Input should be 'keep' or 'compare'"),
      ("verify", {"subject_id": "V-1", "ttl_s": "soon"}, "ttl_s: Input should be a valid number")],
     [("forget_entry", {"key": "BK-1"}), ("forget_entry", {"all": True}),
      ("verify", {"subject_id": "V-1", "booking_id": "BK-1", "ttl_s": 30, "entry": "keep"}), ("status", {})]),
    (OsdpReaderDriver, {"port": "/nonexistent/tty", "key_file": "/nonexistent/reader.key"},
     [("feedbak", {"outcome": "grant"}, "reader does not support command 'feedbak'"),
      ("feedback", {"outcome": "open"}, "outcome: Input should be 'grant', 'deny' or 'hold'"),
      ("feedback", {"outcome": "grant", "colour": "red"}, "colour: unknown argument")],
     [("feedback", {"outcome": "hold", "seconds": 2})]),
    (XrayFolderDriver, {"path": "/nonexistent/inbox"},  # no handle at all: every command is refused
     [("rescan", {}, "takes no commands (not 'rescan')")], []),
]


@pytest.mark.parametrize(("cls", "options", "refused", "accepted"), CASES,
                         ids=[case[0].__name__ for case in CASES])
def test_a_command_the_driver_would_refuse_is_refused_by_its_check(cls, options, refused, accepted):
    config = _config(cls, **options)
    for name, args, problem in refused:
        with pytest.raises(CommandError) as info:
            cls.check_command(config, name, args)
        assert problem in str(info.value), (name, args, str(info.value))
    for name, args in accepted:  # positive control: the driver's own valid commands pass
        cls.check_command(config, name, args)


def test_the_camera_handles_what_its_check_returns(tmp_path):
    """handle() runs the same check first: a bad argument never reaches the face worker."""
    sent = []
    from types import SimpleNamespace

    driver = FaceCameraDriver(_config(FaceCameraDriver, source=str(tmp_path)), ctx=SimpleNamespace(now=lambda: 1e9))
    driver._send = sent.append
    with pytest.raises(CommandError, match="ttl_s: Input should be a valid number"):
        driver.handle("verify", {"subject_id": "V-1", "ttl_s": "soon"})
    assert sent == []
    assert driver.handle("verify", {"subject_id": "V-1", "booking_id": "BK-1", "entry": "keep"})["accepted"]
    assert driver.handle("forget_entry", {"all": True}) == {"forgotten": "all"}
    assert sent == [{"op": "claim", "subject_id": "V-1", "booking_id": "BK-1", "ttl_s": None, "entry": "keep",
                     "now": 1e9},  # the device's trusted time (DriverContext.now) judges the visit's window
                    {"op": "forget_entry", "key": None, "all": True}]
