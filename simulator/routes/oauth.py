"""``GET /oauth/v1/generate``: client-credentials tokens, one live token per app at a time."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.context import SimContext
from simulator.envelopes import INVALID_AUTHENTICATION_TYPE, INVALID_GRANT_TYPE, gateway_error
from simulator.faults import Api, Phase
from simulator.responding import gateway_rejection


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(key, secret)`` from ``Authorization: Basic base64(key:secret)``, or None."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def generate_token(ctx: SimContext, request: Request) -> Response:
    """Issue a token for the app whose Basic credentials were sent. Each new token invalidates
    that app's previous one (Daraja FAQ), by default.

    Errors: ``400.008.02`` wrong/missing ``grant_type``; ``400.008.01`` missing or non-Basic
    authorization, or a key/secret that does not match (HTTP 400 in every case).
    """
    rejection = gateway_rejection(ctx.take_fault(Api.OAUTH, None, Phase.GATEWAY))
    if rejection is not None:
        return rejection
    if request.query_params.get("grant_type") != "client_credentials":
        return gateway_error(400, INVALID_GRANT_TYPE, "Invalid grant type passed")
    credentials = _basic_credentials(request)
    if credentials is None:
        return gateway_error(400, INVALID_AUTHENTICATION_TYPE, "Invalid Authentication passed")
    key, secret = credentials
    config = ctx.config
    # Compare with every app, both halves each time, so that timing reveals neither which app
    # nor which half was wrong.
    matched = None
    for app in config.daraja_apps:
        key_ok = _same(key, app.consumer_key)
        secret_ok = _same(secret, app.consumer_secret)
        if key_ok and secret_ok:
            matched = app
    if matched is None:
        return gateway_error(400, INVALID_AUTHENTICATION_TYPE, "Invalid client id passed")
    # The token is bound to this app: it works on the app's products only (simulator.apps).
    token = ctx.state.issue_token(ttl_s=config.token_ttl_s, now=ctx.monotonic(),
                                  single_active=config.single_active_token,
                                  app=matched.consumer_key)
    expires_in: str | int = str(config.token_ttl_s) if config.expires_in_as_string else config.token_ttl_s
    return JSONResponse({"access_token": token, "expires_in": expires_in})
