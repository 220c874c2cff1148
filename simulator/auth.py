"""Bearer-token checks for the Daraja APIs and for the simulator's own admin routes."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.context import SimContext
from simulator.envelopes import (
    invalid_access_token,
    invalid_authentication_header,
    no_api_product_match,
)
from simulator.faults import Api


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when the header is not that."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def require_access_token(ctx: SimContext, request: Request, api: Api | None = None) -> Response | None:
    """None when the request carries a live token that may call ``api``; else the refusal.

    A GET on a POST API and a missing Bearer header both get ``404.001.04``; an unknown,
    expired or superseded token gets ``404.001.03 Invalid Access Token``; a live token of an app
    without ``api``'s product gets ``401.003.01 … no apiproduct match found`` (simulator.apps).
    """
    if request.method != "POST":
        return invalid_authentication_header()
    token = bearer_token(request)
    if token is None:
        return invalid_authentication_header()
    app_key = ctx.state.token_app(token, now=ctx.monotonic()) if token else None
    if app_key is None:
        return invalid_access_token(ctx.config.invalid_token_http_status)
    if api is not None:
        app = ctx.config.app_for(app_key)
        if app is None or not app.allows(api):
            return no_api_product_match()
    return None


def calling_app(ctx: SimContext, request: Request) -> str | None:
    """The consumer key of the app whose live token the request carries, if any."""
    token = bearer_token(request)
    return ctx.state.token_app(token, now=ctx.monotonic()) if token else None


def require_admin(ctx: SimContext, request: Request) -> Response | None:
    """The ``/sim/...`` routes are open unless ``admin_token`` is configured."""
    expected = ctx.config.admin_token
    if expected is None:
        return None
    token = bearer_token(request) or ""
    if hmac.compare_digest(token.encode(), expected.encode()):
        return None
    return JSONResponse({"error": "admin token required"}, status_code=401)
