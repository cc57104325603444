"""A barrier's reported state is the controller's confirmed state (simulator over a real pty).

Finding of issue 19: on bcc-p2p a stray 0x06 byte in the reply window
acknowledged a lockdown the controller never received, and it was reported OK.
Now every mode change is read back from the controller; a stray byte, a late
reply or a reply to another request never completes a command.
"""

from __future__ import annotations

import pytest

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import codec_rs485
from drivers.turnstile import messages as m
from edge.errors import CommandError
from tests._turnstile_helpers import Lane

CODECS = ["bcc-p2p", "rs485-bus"]


@pytest.fixture(params=CODECS)
def lane(request, tmp_path):
    lane = Lane(request.param, tmp_path).start()
    lane.online()
    yield lane
    lane.stop()


def _stray_for(lane) -> bytes:
    """What an attacker (or noise) puts on the line: a bare ACK byte, or a valid ACK frame for
    another request (rs485 frames carry a CRC, so a forger writes a well-formed one)."""
    if lane.driver.codec.polled:
        return codec_rs485.encode(m.Ack(code=0x21), 1)  # acknowledges a different request code
    return b"\x06"


@pytest.mark.parametrize("command", ["lockdown", "unlock", "lock"])
def test_a_stray_ack_never_confirms_a_command_the_controller_did_not_receive(lane, command):
    device = lane.sim.devices[1]
    if command == "lock":
        lane.driver.handle("unlock", {})  # so that a lock would change something
    before, late = device.mode, lane.driver.stats["late_replies"]
    lane.sim.stray_next(_stray_for(lane))
    if lane.driver.codec.polled:
        # rs485-bus: the forged ACK names another request, so it is not this command's answer;
        # the command is sent again, really received, and confirmed by a status read.
        assert lane.driver.handle(command, {})["mode"] == device.mode.name.lower() != before.name.lower()
        assert lane.driver.stats["late_replies"] > late and lane.driver.stats["retries"] >= 1
        return
    with pytest.raises(CommandError, match="NOT confirmed") as info:
        lane.driver.handle(command, {})
    assert device.mode == before  # the controller never got it
    assert before.name.lower() in str(info.value)  # and the error says what the lane really is
    assert lane.driver.stats["unconfirmed"] == 1

    result = lane.driver.handle(command, {})  # positive control: the next command is confirmed
    assert result["ok"] and result["mode"] == {"lockdown": "lockdown", "unlock": "free", "lock": "locked"}[command]
    assert device.mode.name.lower() == result["mode"]


def test_a_command_with_no_answer_reports_the_state_read_afterwards(lane):
    lane.sim.drop_next(1 + lane.driver.config.retries)  # every attempt lost; status still answered
    with pytest.raises(CommandError, match="it now reports mode locked"):
        lane.driver.handle("lockdown", {})
    assert lane.sim.devices[1].mode == m.Mode.LOCKED
    assert lane.driver.handle("lockdown", {})["mode"] == "lockdown"


def test_late_replies_and_noise_never_complete_a_lockdown(tmp_path):
    """bcc-p2p with the controller muted: ACK bytes sent before the command is written are old."""
    lane = Lane("bcc-p2p", tmp_path).start()
    try:
        lane.online()
        lane.sim.mute(True)
        lane.sim.noise(64)
        lane.sim._send(b"\x06\x06\x06")  # late ACKs of nothing, waiting in the driver's input
        with pytest.raises(CommandError, match="NOT confirmed"):
            lane.driver.handle("lockdown", {})
        assert lane.sim.devices[1].mode == m.Mode.LOCKED
        lane.sim.mute(False)
        assert lane.driver.handle("lockdown", {})["mode"] == "lockdown"
    finally:
        lane.stop()


def test_the_simulator_hook_really_withholds_the_command(tmp_path):
    sim = TurnstileSim("bcc-p2p", tmp_path / "tty", seed=1).start()
    try:
        sim.stray_next(b"\x06")
        assert sim._stray == b"\x06"
    finally:
        sim.stop()


@pytest.mark.parametrize("codec_name", CODECS)
def test_an_impossible_device_event_is_refused_and_the_lane_keeps_counting(tmp_path, codec_name):
    """A well-framed passage without a direction killed the driver (KeyError) on every resend."""
    lane = Lane(codec_name, tmp_path).start()
    try:
        lane.online()
        codec = lane.driver.codec
        for bad in (m.DeviceEvent(seq=900, kind=m.EventKind.PASSAGE, direction=None, counter=5),
                    m.DeviceEvent(seq=0, kind=m.EventKind.EMERGENCY, arg=1)):
            lane.sim._send(codec.encode(bad, 1))
        if codec.polled:  # rs485-bus: unsolicited frames are never taken as events, only polled ones
            lane.driver.handle("ping", {})
        else:
            refused = lane.wait("turnstile.event_refused", count=2)
            assert {e["priority"] for e in refused} == {"alarm"}
            assert "direction" in refused[0]["payload"]["reason"]
        assert not lane.of("turnstile.emergency")  # a forged seq-0 fire alarm changes nothing
        lane.sim.passage("in")  # positive control: the next real passage is counted
        assert lane.wait("turnstile.passage", count=1)[0]["payload"]["direction"] == "in"
        assert lane.driver.health()["status"] == "ok"
    finally:
        lane.stop()
