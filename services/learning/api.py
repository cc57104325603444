"""Learning routes of the tablet's local API (documented in docs/openapi.json)."""

from __future__ import annotations

import re

from edge.errors import EdgeError
from edge.localapi.server import ApiError, Request, Response, file_response, json_response
from edge.schema import PSEUDONYM, SHA256_HEX
from services.learning._cache import CorruptContent
from services.learning.statements import StatementInvalid

_HEX64 = re.compile(SHA256_HEX)
RETRY_AFTER_S = "30"


class _Routes:
    """The handlers; each takes a Request and returns a Response or raises ApiError."""

    def __init__(self, learning, sessions=None):
        self.learning, self.sessions = learning, sessions

    def _own(self, req: Request, resident: str) -> None:
        """On a tablet with resident login, a route about a resident answers only to that
        resident's session (services.residents): 401 without one, 403 for another resident's."""
        if self.sessions is None:
            return
        if self.sessions.current(req).resident != resident:
            raise ApiError(403, "not_your_resident", "a session answers only for its own resident")

    def catalog(self) -> object:
        try:
            return self.learning.catalog()
        except EdgeError as exc:
            raise ApiError(503, "no_catalog", str(exc), {"Retry-After": RETRY_AFTER_S}) from None

    def get_catalog(self, req: Request) -> Response:
        cat = self.catalog()
        doc = cat.model_dump(mode="json", exclude={"signatures"})
        # The catalog is one document for the whole site and its assignments name residents:
        # this route needs no session, so it keeps only this tablet's device-wide assignments
        # (a resident's own come from /assignments with their session). Otherwise whoever
        # holds the UI lists every resident's pseudonym and what they study.
        doc["assignments"] = [a for a in doc["assignments"] if a["device"] == self.learning.device]
        for course in doc["courses"]:
            for item in course["items"]:
                item.pop("chunks")
                item["cached"] = self.learning.cache.has(item["sha256"])
        return json_response(doc)

    def get_assignments(self, req: Request) -> Response:
        resident = req.query.get("resident")
        if resident is not None and not re.fullmatch(PSEUDONYM, resident):
            raise ApiError(400, "bad_resident", f"resident {resident!r} is not a pseudonym")
        if resident is not None:
            self._own(req, resident)
        cat = self.catalog()
        out = []
        for a in cat.assigned(self.learning.device, {resident} if resident else set()):
            if a.resident not in (None, resident):
                continue
            course = cat.course(a.course)
            out.append({"course": a.course, "title": course.title, "device": a.device,
                        "resident": a.resident,
                        "ready": all(self.learning.cache.has(i.sha256) for i in course.items)})
        return json_response({"catalog_version": cat.version, "assignments": out})

    def get_content(self, req: Request) -> Response:
        sha = req.params["sha256"]
        if not _HEX64.fullmatch(sha):
            raise ApiError(400, "bad_hash", f"{sha!r} is not a lower-case hex sha256")
        item = self.learning.keeper.current.items().get(sha) if self.learning.keeper.current else None
        if not self.learning.cache.has(sha):
            if item is None:
                raise ApiError(404, "unknown_content", f"no item {sha} in the catalog or the cache")
            self.learning.refetch(sha)
            raise ApiError(503, "not_cached_yet", "item is being downloaded; retry later",
                           {"Retry-After": RETRY_AFTER_S})
        try:
            path = self.learning.cache.open_for_read(sha)
        except CorruptContent as exc:
            self.learning.refetch(sha)
            raise ApiError(503, "corrupt_refetching", str(exc), {"Retry-After": RETRY_AFTER_S}) from None
        except FileNotFoundError:
            raise ApiError(404, "unknown_content", f"item {sha} is not cached") from None
        media = item.media_type if item else "application/octet-stream"
        return file_response(path, path.stat().st_size, media, req.headers.get("Range"))

    def post_statement(self, req: Request) -> Response:
        body = req.json()  # ApiError 400 for a body that is not JSON: not the store's fault
        if self.sessions is not None:  # a statement is made by the logged-in resident, never for another
            actor = body.get("actor") if isinstance(body, dict) else None
            account = actor.get("account") if isinstance(actor, dict) else None
            name = account.get("name") if isinstance(account, dict) else None
            session = self.sessions.current(req)
            if isinstance(name, str) and name != session.resident:
                raise ApiError(403, "not_your_resident", "a statement's actor must be the logged-in resident")
        try:
            payload = self.learning.record_statement(body)
        except StatementInvalid as exc:
            raise ApiError(400, "bad_statement", str(exc)) from None
        except EdgeError as exc:  # the store refused it (full of alarms): say so, keep nothing
            raise ApiError(503, "not_stored", str(exc)) from None
        return json_response({"id": payload["id"], "stored": True}, 201)

    def get_status(self, req: Request) -> Response:
        return json_response(self.learning.status())

    def post_fetch(self, req: Request) -> Response:
        body = req.json()
        course = body.get("course") if isinstance(body, dict) else None
        if not isinstance(course, str):
            raise ApiError(400, "bad_request", 'expected {"course": "<course id>"}')
        try:
            queued = self.learning.fetch_course(course)
        except LookupError as exc:
            raise ApiError(404, "unknown_course", str(exc.args[0])) from None
        except EdgeError as exc:
            raise ApiError(503, "unavailable", str(exc)) from None
        return json_response({"course": course, "queued_items": queued}, 202)

    def post_invalidate(self, req: Request) -> Response:
        body = req.json()
        sha = body.get("sha256") if isinstance(body, dict) else None
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise ApiError(400, "bad_request", 'expected {"sha256": "<hex sha256>"}')
        return json_response({"sha256": sha, "queued": self.learning.refetch(sha)}, 202)


def register(api, learning, sessions=None) -> None:
    """Add the /v1/learning/… routes for ``learning`` (a LearningComponent) to ``api``; with
    ``sessions`` (services.residents), resident-specific routes need that resident's session."""
    r = _Routes(learning, sessions)
    api.add_route("GET", "/v1/learning/catalog", r.get_catalog)
    api.add_route("GET", "/v1/learning/assignments", r.get_assignments)
    api.add_route("GET", "/v1/learning/content/{sha256}", r.get_content)
    api.add_route("POST", "/v1/learning/statements", r.post_statement)
    api.add_route("GET", "/v1/learning/status", r.get_status)
    api.add_route("POST", "/v1/learning/fetch", r.post_fetch)
    api.add_route("POST", "/v1/learning/invalidate", r.post_invalidate)
