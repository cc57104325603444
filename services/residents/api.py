"""Session routes of the tablet's local API: log a resident in and out (docs/resident-login.md)."""

from __future__ import annotations

import math

from edge.localapi.server import Request, Response, json_response


def register(api, residents) -> None:
    """Add ``/v1/session`` (POST log in, GET who is logged in, DELETE log out) to ``api``."""

    def login(req: Request) -> Response:
        body = req.json()
        body = body if isinstance(body, dict) else {}
        token, who = residents.login(body.get("pseudonym"), body.get("pin"))
        s = residents.settings
        return json_response({"token": token, "resident": who, "idle_timeout_s": s.idle_timeout_s,
                              "fresh_pin_s": s.fresh_pin_s}, 201)

    def whoami(req: Request) -> Response:
        session = residents.sessions.current(req)
        return json_response({"resident": session.resident,
                              "pin_fresh_for_s": math.ceil(residents.sessions.pin_fresh_for(session) * 10) / 10})

    def logout(req: Request) -> Response:
        return json_response({"ended": residents.sessions.end(req)})

    api.add_route("POST", "/v1/session", login)
    api.add_route("GET", "/v1/session", whoami)
    api.add_route("DELETE", "/v1/session", logout)
