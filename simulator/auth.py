"""Bearer-token checks for the Daraja APIs and for the simulator's own admin routes."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.context import SimContext
from simulator.envelopes import invalid_access_token, invalid_authentication_header


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when the header is not that."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def require_access_token(ctx: SimContext, request: Request) -> Response | None:
    """None when the request carries a live token; otherwise the gateway's refusal.

    A GET on a POST API and a missing Bearer header both get ``404.001.04``; an unknown,
    expired or superseded token gets ``404.001.03 Invalid Access Token``.
    """
    if request.method != "POST":
        return invalid_authentication_header()
    token = bearer_token(request)
    if token is None:
        return invalid_authentication_header()
    if not token or not ctx.state.token_valid(token, now=ctx.monotonic()):
        return invalid_access_token(ctx.config.invalid_token_http_status)
    return None


def require_admin(ctx: SimContext, request: Request) -> Response | None:
    """The ``/sim/...`` routes are open unless ``admin_token`` is configured."""
    expected = ctx.config.admin_token
    if expected is None:
        return None
    token = bearer_token(request) or ""
    if hmac.compare_digest(token.encode(), expected.encode()):
        return None
    return JSONResponse({"error": "admin token required"}, status_code=401)
