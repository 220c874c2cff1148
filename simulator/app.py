"""``build_app(config)``: the Daraja simulator as a Starlette application.

Building the app is the only place anything is created — key pair, state, callback sender —
so importing this module has no side effects and every app is independent.

Routes (real Daraja paths):

=======================================  ==================================================
``GET  /oauth/v1/generate``              token (``?grant_type=client_credentials``, Basic)
``POST /mpesa/c2b/v{1,2}/registerurl``   C2B URLs
``POST /mpesa/c2b/v{1,2}/simulate``      a customer pays the paybill
``POST /mpesa/b2c/v{1,3}/paymentrequest``  B2C payout
``POST /mpesa/transactionstatus/v1/query``
``POST /mpesa/accountbalance/v1/query``
``POST /pulltransactions/v1/register``
``POST /pulltransactions/v1/query``
``POST /mpesa/stkpush/v1/processrequest``  M-Pesa Express (STK push)
``POST /mpesa/stkpushquery/v1/query``    STK query
``POST /version1/messaging``             Africa's Talking: send SMS (``simulator.routes.sms``)
=======================================  ==================================================

and the simulator's own ``/healthz`` and ``/sim/...`` routes (see ``simulator.routes.admin``).

Any other path gets Daraja's ``404.001.01 Resource not found`` envelope, and a method an API does
not take (other than GET on a POST API: ``404.001.04``) gets ``405.001 <METHOD> Method Not
Allowed`` (docs/daraja.md §9.3); ``/sim/...`` and ``/healthz`` keep Starlette's plain answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from simulator.callbacks import CallbackSender, redact_httpx_logs
from simulator.config import SimulatorConfig
from simulator.context import SimContext
from simulator.credentials import SimulatorCredentials, generate_credentials
from simulator.envelopes import method_not_allowed, resource_not_found
from simulator.faults import FaultMix
from simulator.routes import (
    account_balance,
    admin,
    b2c,
    c2b,
    express,
    oauth,
    pull,
    sms,
    transaction_status,
    ussd,
)
from simulator.state import SimulatorState

#: Bodies above this are refused before parsing (Daraja bodies are a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024
# POST APIs also match GET so that a GET gets Daraja's 404.001.04 envelope, not a bare 405.
_API_METHODS = ["GET", "POST"]


def _api_routes(ctx: SimContext) -> list[BaseRoute]:
    def api(path: str, endpoint: Callable[[Request], Awaitable[Response]], name: str) -> Route:
        return Route(path, endpoint, methods=_API_METHODS, name=name)

    return [
        Route("/oauth/v1/generate", partial(oauth.generate_token, ctx), methods=["GET"],
              name="oauth"),
        *(api(f"/mpesa/c2b/{v}/registerurl", partial(c2b.register_url, ctx, version=v),
              f"c2b_registerurl_{v}") for v in ("v1", "v2")),
        *(api(f"/mpesa/c2b/{v}/simulate", partial(c2b.simulate, ctx, version=v),
              f"c2b_simulate_{v}") for v in ("v1", "v2")),
        *(api(f"/mpesa/b2c/{v}/paymentrequest", partial(b2c.payment_request, ctx, version=v),
              f"b2c_{v}") for v in ("v1", "v3")),
        api("/mpesa/transactionstatus/v1/query", partial(transaction_status.query, ctx),
            "transaction_status"),
        api("/mpesa/accountbalance/v1/query", partial(account_balance.query, ctx),
            "account_balance"),
        api("/pulltransactions/v1/register", partial(pull.register, ctx), "pull_register"),
        api("/pulltransactions/v1/query", partial(pull.query, ctx), "pull_query"),
        api("/mpesa/stkpush/v1/processrequest", partial(express.push, ctx), "stk_push"),
        api("/mpesa/stkpushquery/v1/query", partial(express.query, ctx), "stk_query"),
        # Africa's Talking, not Daraja: its own answers (plain-text errors), never Daraja's envelopes.
        Route("/version1/messaging", partial(sms.send, ctx), methods=["GET", "POST"], name="at_sms"),
    ]


def _admin_routes(ctx: SimContext) -> list[BaseRoute]:
    def route(path: str, endpoint: Callable[[SimContext, Request], Awaitable[Response]],
              method: str) -> Route:
        name = f"sim_{getattr(endpoint, '__name__', 'route')}_{method.lower()}"
        return Route(path, partial(endpoint, ctx), methods=[method], name=name)

    return [
        route("/healthz", admin.healthz, "GET"),
        route("/sim/cert.pem", admin.certificate, "GET"),
        route("/sim/faults", admin.queue_faults, "POST"),
        route("/sim/faults", admin.list_faults, "GET"),
        route("/sim/faults", admin.clear_faults, "DELETE"),
        route("/sim/payments", admin.payments, "GET"),
        route("/sim/b2c", admin.b2c_requests, "GET"),
        route("/sim/c2b", admin.c2b_payments, "GET"),
        route("/sim/stk", admin.stk_requests, "GET"),
        route("/sim/sms", sms.messages, "GET"),
        route("/sim/ussd", ussd.session, "POST"),
        route("/sim/callbacks", admin.callbacks, "GET"),
        route("/sim/callbacks/{attempt_id}/replay", admin.replay_callback, "POST"),
        route("/sim/balances", admin.balances, "GET"),
        route("/sim/tokens/expire", admin.expire_tokens, "POST"),
        route("/sim/reset", admin.reset, "POST"),
    ]


def _is_own_route(path: str) -> bool:
    """The simulator's own routes, which are not Daraja and keep Starlette's plain answers."""
    return path == "/healthz" or path == "/sim" or path.startswith("/sim/")


async def _gateway_http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as Daraja's gateway answers them: its JSON error envelope."""
    assert isinstance(exc, HTTPException)
    if _is_own_route(request.url.path):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        # POST APIs also route GET (for 404.001.04); to the client they take POST only.
        return method_not_allowed(request.method, "POST" if "POST" in allowed else allowed)
    return resource_not_found()


def build_app(config: SimulatorConfig, *, credentials: SimulatorCredentials | None = None) -> Starlette:
    """A new, independent simulator for ``config``.

    ``credentials`` reuses a key pair (e.g. across test apps) instead of generating one; the
    certificate is served at ``/sim/cert.pem`` either way.
    """
    state = SimulatorState(utility_opening=config.utility_opening_balance,
                           working_opening=config.working_opening_balance)
    ctx = SimContext(
        config=config,
        state=state,
        credentials=credentials or generate_credentials(),
        callbacks=CallbackSender(state, timeout_s=config.callback_timeout_s),
        fault_mix=FaultMix(config),
    )
    ctx.apply_preregistration()
    redact_httpx_logs()  # the URLs it posts to carry the client's callback token

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # Clean shutdown: no callback task outlives the app, the HTTP client is closed.
            await ctx.callbacks.aclose()

    app = Starlette(routes=[*_api_routes(ctx), *_admin_routes(ctx)], lifespan=lifespan,
                    max_body_size=MAX_BODY_BYTES,
                    exception_handlers={404: _gateway_http_error, 405: _gateway_http_error})
    app.state.simulator = ctx
    return app
