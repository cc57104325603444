"""A passage stored before its grant's result reaches the engine still counts as that grant's passage.

The turnstile driver stores turnstile.granted and then, a moment later, the passage; the
grant's result comes back to the engine by another path (the command router's future), which
on a loaded machine can arrive after both. Seen in the 200-move perimeter test under load.
"""

from __future__ import annotations

from concurrent.futures import Future

from tests.test_gate_engine import FakeRouter, Harness, _present


class SlowGrantRouter(FakeRouter):
    """Holds the grant's result until the test releases it."""

    def __init__(self):
        super().__init__()
        self.pending: list[Future] = []

    def submit_local(self, request, operator):
        if request["name"] != "grant":
            return super().submit_local(request, operator)
        self.sent.append(request)
        future: Future = Future()
        self.pending.append(future)
        return future

    submit_policy = submit_local  # the engine's own driver commands


def test_a_passage_overtaking_the_grant_result_is_counted(tmp_path):
    h = Harness(tmp_path / "state")
    slow = SlowGrantRouter()
    slow.target = h.router.target  # the gate target the engine registered
    h.router = h.engine._router = slow
    h.engine.start()
    try:
        _present(h)
        h.emit("biometric.verified", {"booking_id": "BK-1", "subject_id": "V-1", "distance": 0.3,
                                      "threshold": 0.5}, "normal", "cam")
        while not h.router.pending:
            h.wait("biometric.*", timeout=1)
        h.emit("turnstile.granted", {"direction": "in", "passes": 1, "timeout_s": 30}, "normal", "ts")
        passage = h.emit("turnstile.passage", {"direction": "in"}, "normal", "ts")
        h.wait("turnstile.passage", timeout=5)
        h.router.pending[0].set_result({"id": "local-grant", "status": "ok", "result": {"rtt_ms": 1.0}})
        d = h.wait("gate.decision")["payload"]
        assert d["outcome"] == "grant"
        p = h.wait("gate.passage")["payload"]
        assert p["passed"] and p["evidence"] == [passage.id] and p["approach_id"] == d["approach_id"]
    finally:
        h.close()
