"""Messaging routes of the tablet's local API: one resident's mailbox at a time.

The UI names the resident in the ``X-Resident`` header; every route answers
only from that resident's mailbox (another resident's message is a 404, never
a 403, so its existence is not revealed).
"""

from __future__ import annotations

import re

from edge.errors import EdgeError
from edge.localapi.server import ApiError, Request, Response, json_response
from edge.messaging._docs import PSEUDONYM
from edge.messaging.component import ComposeRefused

_STATUS = {"unknown_contact": 403, "not_configured": 503}


def register(api, messaging) -> None:
    """Add the /v1/messaging/… routes for ``messaging`` (a MessagingComponent) to ``api``."""

    def resident(req: Request) -> str:
        name = req.headers.get("X-Resident")
        if not name or not re.match(PSEUDONYM, name):
            raise ApiError(400, "no_resident", "name the resident in the X-Resident header (their pseudonym)")
        if not messaging.db.has_resident(name):
            raise ApiError(404, "unknown_resident", "this resident has no mailbox on this tablet")
        return name

    def contacts(req: Request) -> Response:
        return json_response({"contacts": messaging.db.contacts(resident(req))})

    def list_messages(req: Request) -> Response:
        return json_response({"messages": messaging.db.list(resident(req))})

    def get_message(req: Request) -> Response:
        msg = messaging.db.get(resident(req), req.params["id"])
        if msg is None:
            raise ApiError(404, "not_found", "no such message in this mailbox")
        return json_response(msg)

    def compose(req: Request) -> Response:
        who = resident(req)
        try:
            return json_response(messaging.compose(who, req.json()), 201)
        except ComposeRefused as exc:
            raise ApiError(_STATUS.get(exc.code, 400), exc.code, str(exc)) from None
        except EdgeError as exc:  # the store refused the event: nothing was kept
            raise ApiError(503, "not_stored", str(exc)) from None

    def mark_read(req: Request) -> Response:
        newly = messaging.mark_read(resident(req), req.params["id"])
        if newly is None:
            raise ApiError(404, "not_found", "no such inbound message in this mailbox")
        return json_response({"id": req.params["id"], "read": True, "receipt_sent": newly})

    def attachment(req: Request) -> Response:
        found = messaging.db.attachment(resident(req), req.params["id"])
        if found is None:
            raise ApiError(404, "not_found", "no such attachment in this mailbox")
        media_type, data = found
        return Response(200, data, content_type=media_type)

    api.add_route("GET", "/v1/messaging/contacts", contacts)
    api.add_route("GET", "/v1/messaging/messages", list_messages)
    api.add_route("POST", "/v1/messaging/messages", compose)
    api.add_route("GET", "/v1/messaging/messages/{id}", get_message)
    api.add_route("POST", "/v1/messaging/messages/{id}/read", mark_read)
    api.add_route("GET", "/v1/messaging/attachments/{id}", attachment)
