"""xAPI statements from the tablet UI, validated before they become ``learning.statement`` events.

The actor is always an xAPI ``account`` whose name is the resident's
pseudonym: ``mbox``, ``name`` and other identifying fields are refused, so no
real identity leaves the tablet in a learning record. Central de-duplicates by
the statement ``id`` (a UUID the UI may set; one is made when it does not).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.errors import EdgeError
from edge.schema import PSEUDONYM


class StatementInvalid(EdgeError):
    """An xAPI statement from the UI does not match what the tablet accepts."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Account(_M):
    homePage: str = Field(min_length=1, max_length=300)
    name: str = Field(pattern=PSEUDONYM, description="The resident's pseudonym.")


class Actor(_M):
    objectType: Literal["Agent"] = "Agent"
    account: Account


class Verb(_M):
    id: str = Field(min_length=3, max_length=300)
    display: dict[str, str] | None = None


class Activity(_M):
    objectType: Literal["Activity"] = "Activity"
    id: str = Field(min_length=3, max_length=300)
    definition: dict[str, Any] | None = None


class Score(_M):
    scaled: float | None = Field(default=None, ge=-1, le=1)
    raw: float | None = None
    min: float | None = None
    max: float | None = None


class Result(_M):
    score: Score | None = None
    success: bool | None = None
    completion: bool | None = None
    duration: str | None = Field(default=None, max_length=64, description="ISO 8601 duration.")
    response: str | None = Field(default=None, max_length=4000)


class Statement(_M):
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    actor: Actor
    verb: Verb
    object: Activity
    result: Result | None = None
    context: dict[str, Any] | None = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone, e.g. 2026-01-31T10:00:00Z")
        return value.astimezone(UTC)


def parse_statement(doc: Any, residents: set[str]) -> dict[str, Any]:
    """The event payload for one statement, or StatementInvalid naming the first problem."""
    if not isinstance(doc, dict):
        raise StatementInvalid("a statement must be a JSON object (xAPI Statement)")
    try:
        statement = Statement.model_validate(doc)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        hint = " (actor must be an xAPI account with the resident's pseudonym)" if where.startswith("actor") else ""
        raise StatementInvalid(f"statement.{where}: {e['msg']}{hint}") from None
    name = statement.actor.account.name
    if residents and name not in residents:
        raise StatementInvalid(f"resident {name!r} is not on this tablet (learning.residents)")
    return statement.model_dump(mode="json", exclude_none=True)
