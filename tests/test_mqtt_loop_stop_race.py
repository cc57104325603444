"""The link survives paho's loop_stop race (its network thread ending between check and join)."""

from __future__ import annotations

from edge.mqtt.link import _stop_loop


class _RacingClient:
    """paho's loop_stop as it behaves when its thread clears itself mid-call."""

    calls = 0

    def loop_stop(self):
        self.calls += 1
        thread = None  # cleared by the ending network thread after loop_stop looked at it
        return thread.join()


def test_stop_loop_tolerates_the_thread_ending_on_its_own():
    client = _RacingClient()
    _stop_loop(client)  # must not raise: an exception here ended the mqtt-link thread for good
    assert client.calls == 1
