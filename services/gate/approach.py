"""One person in one lane: where they are in their flow, and the evidence each step left.

Pure bookkeeping, no I/O: the engine moves an ``Approach`` along and turns it
into the ``gate.decision`` payload. States: ``running`` (a step is in
progress), ``held`` (waiting for an officer), ``granting`` (the turnstile
grant is on its way), then the approach is decided and dropped.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.gate.settings import Flow, Step


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class StepRecord:
    """What one step did: ok, failed or timeout, with the ids of the events that prove it."""

    kind: str
    result: str = "pending"  # pending | ok | failed | timeout | skipped
    evidence: list[str] = field(default_factory=list)
    detail: str = ""
    command_id: str | None = None
    started_at: str = field(default_factory=_now_iso)
    ended_at: str | None = None

    def end(self, result: str, detail: str = "", evidence: list[str] | None = None) -> None:
        self.result, self.detail, self.ended_at = result, detail, _now_iso()
        if evidence:
            self.evidence += [e for e in evidence if e not in self.evidence]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "result": self.result, "evidence": list(self.evidence), "detail": self.detail,
                "command_id": self.command_id, "started_at": self.started_at, "ended_at": self.ended_at}


@dataclass
class Approach:
    lane: str
    direction: str
    role: str
    flow: Flow | None
    subject: str | None = None
    booking_id: str | None = None
    started_by: str = "present"  # present | camera | override
    id: str = field(default_factory=lambda: f"ap-{uuid.uuid4()}")
    started_at: str = field(default_factory=_now_iso)
    state: str = "running"
    index: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    deadline: float | None = None  # monotonic time the current wait ends
    t0: float = field(default_factory=time.monotonic)
    start_event: str | None = None  # the event that started it (a staff identification)

    @property
    def step(self) -> Step | None:
        if self.flow is None or self.index >= len(self.flow.steps):
            return None
        return self.flow.steps[self.index]

    @property
    def record(self) -> StepRecord | None:
        return self.steps[-1] if self.steps and self.steps[-1].result == "pending" else None

    def begin(self, step: Step, timeout_s: float | None) -> StepRecord:
        rec = StepRecord(step.kind)
        self.steps.append(rec)
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        return rec

    def evidence(self) -> list[str]:
        return [e for s in self.steps for e in s.evidence]

    def body(self) -> dict[str, Any]:
        """What the state file keeps: enough to record the approach as denied after a crash."""
        return {"id": self.id, "lane": self.lane, "direction": self.direction, "role": self.role,
                "subject": self.subject, "booking_id": self.booking_id, "started_by": self.started_by,
                "started_at": self.started_at, "state": self.state,
                "steps": [s.as_dict() for s in self.steps]}

    def summary(self) -> dict[str, Any]:
        step = self.step
        return {"id": self.id, "lane": self.lane, "direction": self.direction, "role": self.role,
                "subject": self.subject, "booking_id": self.booking_id, "state": self.state,
                "step": step.kind if step else None, "started_at": self.started_at,
                "waiting_s": round(max(0.0, self.deadline - time.monotonic()), 1) if self.deadline else None}


def decision_payload(body: dict[str, Any], *, outcome: str, reason: str, detail: str, mode: str,
                     online: bool, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``gate.decision`` payload of an approach (its ``body()``), decided."""
    steps = body.get("steps", [])
    return {
        "approach_id": body["id"], "lane": body["lane"], "direction": body["direction"], "role": body["role"],
        "subject": body.get("subject"), "booking_id": body.get("booking_id"),
        "started_by": body.get("started_by"), "started_at": body.get("started_at"), "decided_at": _now_iso(),
        "outcome": outcome, "reason": reason, "detail": detail, "mode": mode, "online": online,
        "steps": steps, "evidence": [e for s in steps for e in s.get("evidence", [])],
        "override": override,
    }
