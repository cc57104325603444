"""Messaging routes of the tablet's local API: one resident's mailbox at a time.

Every route needs ``Authorization: Bearer <token>`` from ``POST /v1/session``
and answers only from that session's resident's mailbox (another resident's
message is a 404, never a 403, so its existence is not revealed). Legal
(privileged) mail, read, marked read (a read receipt to its sender) or written,
also needs the PIN entered within the last ``residents.fresh_pin_s`` seconds.
"""

from __future__ import annotations

from edge.errors import EdgeError
from edge.localapi.server import ApiError, Request, Response, json_response
from services.messaging.component import ComposeRefused

_STATUS = {"unknown_contact": 403, "not_configured": 503}


def register(api, messaging, sessions) -> None:
    """Add the /v1/messaging/… routes for ``messaging`` (a MessagingComponent) to ``api``;
    ``sessions`` (services.residents.sessions.Sessions) says who is asking."""

    def contacts(req: Request) -> Response:
        return json_response({"contacts": messaging.db.contacts(sessions.current(req).resident)})

    def list_messages(req: Request) -> Response:
        return json_response({"messages": messaging.db.list(sessions.current(req).resident)})

    def get_message(req: Request) -> Response:
        session = sessions.current(req)
        msg = messaging.db.get(session.resident, req.params["id"])
        if msg is None:
            raise ApiError(404, "not_found", "no such message in this mailbox")
        if msg["privileged"]:
            sessions.require_fresh_pin(session)
        return json_response(msg)

    def compose(req: Request) -> Response:
        session = sessions.current(req)
        doc = req.json()
        contact = doc.get("contact") if isinstance(doc, dict) else None
        found = messaging.db.contact(session.resident, contact) if isinstance(contact, str) else None
        if found and found["privileged"]:
            sessions.require_fresh_pin(session)
        try:
            return json_response(messaging.compose(session.resident, doc), 201)
        except ComposeRefused as exc:
            raise ApiError(_STATUS.get(exc.code, 400), exc.code, str(exc)) from None
        except EdgeError as exc:  # the store refused the event: nothing was kept
            raise ApiError(503, "not_stored", str(exc)) from None

    def mark_read(req: Request) -> Response:
        session = sessions.current(req)
        if messaging.db.privileged(session.resident, req.params["id"]):
            # Marking legal mail read sends its sender a read receipt: only the resident
            # who just entered the PIN may, as for reading it.
            sessions.require_fresh_pin(session)
        newly = messaging.mark_read(session.resident, req.params["id"])
        if newly is None:
            raise ApiError(404, "not_found", "no such inbound message in this mailbox")
        return json_response({"id": req.params["id"], "read": True, "receipt_sent": newly})

    def attachment(req: Request) -> Response:
        session = sessions.current(req)
        found = messaging.db.attachment(session.resident, req.params["id"])
        if found is None:
            raise ApiError(404, "not_found", "no such attachment in this mailbox")
        media_type, data, privileged = found
        if privileged:
            sessions.require_fresh_pin(session)
        return Response(200, data, content_type=media_type)

    api.add_route("GET", "/v1/messaging/contacts", contacts)
    api.add_route("GET", "/v1/messaging/messages", list_messages)
    api.add_route("POST", "/v1/messaging/messages", compose)
    api.add_route("GET", "/v1/messaging/messages/{id}", get_message)
    api.add_route("POST", "/v1/messaging/messages/{id}/read", mark_read)
    api.add_route("GET", "/v1/messaging/attachments/{id}", attachment)
