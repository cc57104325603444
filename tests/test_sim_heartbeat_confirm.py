"""The crash tests' witness: ``sim.heartbeat``'s confirm file must never vouch for an append
with a line a SIGKILL cut short, nor glue the next run's first line onto it."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from drivers.sim.heartbeat import HeartbeatConfig, HeartbeatDriver, read_confirmations

A = "da2b487a-22dc-4620-9b32-232b5a02f95c"
B = "1f0c2a9e-77b1-4c3d-8e2f-0a1b2c3d4e5f"


def _run_once(path, events: list[tuple[str, int]]) -> None:
    """One daemon run: the driver opens the file, confirms ``events`` in order, closes."""
    stopping, pending = threading.Event(), list(events)

    def emit(_type, _payload, _priority):
        event_id, seq = pending.pop(0)
        if not pending:
            stopping.set()
        return SimpleNamespace(id=event_id, seq=seq)

    ctx = SimpleNamespace(emit=emit, stopping=stopping, wait=stopping.wait)
    driver = HeartbeatDriver(HeartbeatConfig(name="hb", kind="sim.heartbeat", rate=0, confirm_file=path), ctx)
    driver.run()
    driver.close()


def test_a_line_cut_by_a_kill_is_not_counted_and_the_next_run_starts_on_its_own_line(tmp_path):
    path = tmp_path / "confirm.txt"
    path.write_text(f"{A} 41\n03f0a4de")  # the kill cut the second line after 8 bytes
    _run_once(path, [(B, 42)])
    assert path.read_text() == f"{A} 41\n03f0a4de\n{B} 42\n"
    assert read_confirmations(path) == {A: 41, B: 42}


def test_glued_or_unterminated_lines_are_not_confirmations(tmp_path):
    path = tmp_path / "confirm.txt"
    path.write_text(f"03f0a4de{A} 9988\n{A} 7 extra\n{B} 12")  # glued; three words; no newline yet
    assert read_confirmations(path) == {}
    assert read_confirmations(tmp_path / "absent.txt") == {}
