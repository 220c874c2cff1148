"""The callback server: authenticate, parse, persist, acknowledge. No business logic.

Answers (documented for operators in README.md, "What each callback URL answers"):

| case | status | body |
|---|---|---|
| wrong token (any method), unknown path, a path ending in ``/`` | 404 | ``Not Found`` (as for any unknown URL) |
| source IP not allowed (allowlist on) | 403 | ``Forbidden`` |
| right token, a method other than POST | 405 | ``Method Not Allowed`` (``Allow: POST``) |
| content type not ``application/json`` | 415 | ``{"ResultCode": 1, "ResultDesc": "Rejected: content_type"}`` |
| body over ``body_max_bytes`` | 413 | ``{"ResultCode": 1, "ResultDesc": "Rejected: body_too_large"}`` (its first 4 KiB kept, its size in the reason) |
| not JSON / not an object / missing or impossible fields / a number too long / too deep | 400 | ``{"ResultCode": 1, "ResultDesc": "Rejected: <reason>"}`` |
| the client hangs up before the body's end | 400 | nothing reaches it; one info line ``callback_client_disconnected`` |
| stored (or a duplicate of a stored one) | 200 | ``{"ResultCode": 0, "ResultDesc": "Success"}`` |
| PostgreSQL unreachable | 503 | ``{"ResultCode": 1, "ResultDesc": "Temporarily unavailable"}`` |

Validation answers 200 with ``{"ResultCode": "0", "ResultDesc": "Accepted"}`` or a ``C2B000xx``
reject code. Every authenticated rejection is kept in the inbox with status ``rejected``. The
confirmation is parsed with the same bounds as the worker applies (the amount maximum, sane years),
so nothing is acknowledged that the worker would then refuse.

The app refuses to be built with a placeholder or short callback or admin token
(``Settings.require_strong_secrets``), unless under ``fleetpay dev``.

No URL is ever redirected (Starlette's trailing-slash redirect is off: it would send the caller to
the ``Host`` it gave, with the token in ``Location``), and the token is checked before the method,
so nothing a stranger sends tells a callback path from an unknown URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread
import dramatiq
import redis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from db import fleet
from db.engine import make_engine, make_sessionmaker
from fleetpay.settings import Settings
from ingest import metrics
from ingest.admin import admin_routes, broker_metrics
from ingest.africas_talking import AfricasTalking
from ingest.bodies import BodyTooLarge, body_text, is_json_content_type, read_limited
from ingest.books_metrics import books_metrics
from ingest.callers import client_ip, ip_allowed, token_accepted
from ingest.enqueuer import Enqueuer
from ingest.inbox_writer import DatabaseUnavailable, InboxRecord, InboxWriter
from ingest.validation import INVALID_ACCOUNT, AccountState, validation_code
from schemas import callbacks
from schemas.callbacks import InvalidCallback
from schemas.json_body import decode_json
from schemas.parsing import classify_account_ref
from workers.broker import broker_kind, reachable

log = structlog.get_logger("fleetpay.ingest")

ACK = {"ResultCode": 0, "ResultDesc": "Success"}
UNAVAILABLE = {"ResultCode": 1, "ResultDesc": "Temporarily unavailable"}


@dataclass(frozen=True)
class CallbackRoute:
    path: str  # under /cb/{token}/
    kind: str  # the inbox kind
    parse: Callable[[Any, Settings], object]  # (body, settings): the worker's own parse, same bounds


def _parse_c2b_confirmation(body: Any, settings: Settings) -> object:
    # The amount maximum the worker applies (money/callbacks.py): never acknowledge what it refuses.
    return callbacks.parse_c2b(body, max_amount_cents=settings.amount_max_cents)


CALLBACK_ROUTES = (
    CallbackRoute("c2b/confirm", "c2b_confirmation", _parse_c2b_confirmation),
    CallbackRoute("stk/result", "stk_result", lambda body, _settings: callbacks.parse_stk(body)),
    CallbackRoute("b2c/result", "b2c_result", lambda body, _settings: callbacks.parse_b2c_result(body)),
    CallbackRoute("b2c/timeout", "b2c_timeout", lambda body, _settings: callbacks.parse_b2c_result(body)),
    CallbackRoute("status/result", "status_result", lambda body, _settings: callbacks.parse_status_result(body)),
    CallbackRoute("status/timeout", "status_timeout", lambda body, _settings: callbacks.parse_status_result(body)),
    CallbackRoute("balance/result", "balance_result", lambda body, _settings: callbacks.parse_balance_result(body)),
    CallbackRoute("balance/timeout", "balance_timeout", lambda body, _settings: callbacks.parse_b2c_result(body)),
)
VALIDATION_KIND = "c2b_validation"
CALLBACK_METHOD = "POST"  # the only method a callback path answers, once the token is checked


class CallbackPath(Route):
    """A ``/cb/{token}/…`` route that hands every method to its endpoint, which checks the token
    before the method (`Ingest.authenticate`): Starlette's own method check would answer 405 to a
    wrong token and so tell a prober that the path exists."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint, methods=[CALLBACK_METHOD])
        self.methods = None  # every method matches; the endpoint refuses the others, after the token


def log_ids(kind: str, external_id: str) -> dict[str, str]:
    """How a callback is named in logs: ``trans_id`` for payments (grep one M-Pesa receipt from
    the ingest through the worker to its payout), ``originator_conversation_id`` for payouts."""
    if kind in ("c2b_confirmation", "c2b_validation"):
        return {"trans_id": external_id}
    if kind.startswith("b2c_"):
        return {"originator_conversation_id": callbacks.natural_id(external_id).removeprefix("timeout:")}
    return {"external_id": external_id}


def rejected(reason: str, status_code: int = 400) -> JSONResponse:
    return JSONResponse({"ResultCode": 1, "ResultDesc": f"Rejected: {reason}"}, status_code)


def not_found() -> PlainTextResponse:
    return PlainTextResponse("Not Found", 404)


def client_gone() -> Response:
    """The answer to a client that hung up mid-body: nobody reads it."""
    return Response(status_code=400)


def rejected_record(kind: str, raw: bytes, reason: str, source_ip: str | None) -> InboxRecord:
    # Keyed by the body's hash, never by its claimed id: a malformed copy must not shadow the
    # real callback with the same TransID, and the same junk sent twice is kept once.
    digest = hashlib.sha256(reason.encode() + b"\n" + raw).hexdigest()
    return InboxRecord(kind, f"rejected:{digest}", body_text(raw), "rejected", reason, source_ip)


class Ingest:
    """The state behind the routes: settings, the inbox writer and the database for lookups."""

    def __init__(self, settings: Settings, engine: Engine, broker: dramatiq.Broker, shared: redis.Redis) -> None:
        self.settings = settings
        self.engine = engine
        self.broker = broker
        self.shared = shared
        self.tz = ZoneInfo(settings.timezone)
        self.metric_registries: list[CollectorRegistry] = [metrics.edge_registry()]
        self.writer = InboxWriter(
            engine,
            on_committed=Enqueuer(broker, queue_name=settings.queue_name, batch_max=settings.apply_batch_max),
            batch_max=settings.group_commit_max_batch,
            linger_s=settings.enqueue_linger_ms / 1000,
            enqueue_max=settings.apply_batch_max,
        )

    # --- the four steps, shared by every callback route ---------------------------------

    def authenticate(self, request: Request, *, tokens: Sequence[str] | None = None,
                     allowlist: Sequence[str] | None = None) -> Response | None:
        """Who may call, then how: a wrong token (not one of the callback tokens, unless ``tokens``)
        gets the 404 of any unknown URL whatever the method, a source outside the allowlist
        (Safaricom's unless ``allowlist``) 403, and only then a method other than POST 405."""
        accepted = self.settings.accepted_callback_tokens() if tokens is None else tokens
        if not token_accepted(request.path_params["token"], accepted):
            log.warning("callback_refused_token", source_ip=request.client and request.client.host)
            return not_found()
        if self.settings.ip_allowlist_enabled:
            address = client_ip(request, self.settings.trusted_proxies)
            if not ip_allowed(address, self.settings.ip_allowlist if allowlist is None else allowlist):
                log.warning("callback_refused_ip", source_ip=address)
                return PlainTextResponse("Forbidden", 403)
        if request.method != CALLBACK_METHOD:
            return PlainTextResponse("Method Not Allowed", 405, headers={"Allow": CALLBACK_METHOD})
        return None

    async def read(self, request: Request, kind: str) -> tuple[bytes, object] | Response:
        """The raw body and its decoded JSON, or the rejection answer (already recorded)."""
        source_ip = client_ip(request, self.settings.trusted_proxies)
        try:
            raw = await read_limited(request, self.settings.body_max_bytes)
        except BodyTooLarge as error:
            # Its first 4 KiB and its size are kept; the answer names only the reason.
            await self.keep(rejected_record(kind, error.prefix, f"body_too_large:{error.size}", source_ip))
            return rejected("body_too_large", 413)
        except ClientDisconnect:
            # Nothing to keep and nobody to answer: a client (or a proxy) gave up mid-body.
            log.info("callback_client_disconnected", kind=kind, source_ip=source_ip)
            return client_gone()
        if not is_json_content_type(request.headers.get("content-type")):
            await self.keep(rejected_record(kind, raw, "content_type", source_ip))
            return rejected("content_type", 415)
        try:
            return raw, decode_json(raw)
        except InvalidCallback as error:
            await self.keep(rejected_record(kind, raw, error.reason, source_ip))
            return rejected(error.reason)

    async def keep(self, record: InboxRecord) -> None:
        """Keep a rejected body for review; losing it to an outage must not change the answer."""
        with contextlib.suppress(DatabaseUnavailable):
            await self.writer.write(record)

    # --- routes ---------------------------------------------------------------------------

    def callback_endpoint(self, route: CallbackRoute) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if (refusal := self.authenticate(request)) is not None:
                return refusal
            read = await self.read(request, route.kind)
            if isinstance(read, Response):
                return read
            raw, body = read
            source_ip = client_ip(request, self.settings.trusted_proxies)
            try:
                route.parse(body, self.settings)
                digest = callbacks.body_digest(body)
                external_id = callbacks.inbox_key(route.kind, body, digest)
            except InvalidCallback as error:
                await self.keep(rejected_record(route.kind, raw, error.reason, source_ip))
                return rejected(error.reason)
            with structlog.contextvars.bound_contextvars(kind=route.kind, **log_ids(route.kind, external_id)):
                try:
                    inbox_id = await self.writer.write(
                        InboxRecord(route.kind, external_id, body_text(raw), source_ip=source_ip, body_digest=digest)
                    )
                except DatabaseUnavailable:
                    log.error("callback_not_stored_database_unavailable")
                    return JSONResponse(UNAVAILABLE, 503)
                log.info("callback_stored" if inbox_id else "callback_duplicate", inbox_id=inbox_id)
            return JSONResponse(ACK)

        return endpoint

    async def validate(self, request: Request) -> Response:
        if (refusal := self.authenticate(request)) is not None:
            return refusal
        read = await self.read(request, VALIDATION_KIND)
        if isinstance(read, Response):
            return read
        raw, body = read
        source_ip = client_ip(request, self.settings.trusted_proxies)
        try:
            payment = callbacks.parse_c2b(body, max_amount_cents=self.settings.amount_max_cents)
        except InvalidCallback as error:
            await self.keep(rejected_record(VALIDATION_KIND, raw, error.reason, source_ip))
            return self.validation_answer(error.result_code)
        ref = classify_account_ref(
            payment.bill_ref,
            vehicle_code_digits=self.settings.vehicle_code_digits,
            driver_code_pattern=self.settings.driver_code_pattern,
        )
        try:
            state = await anyio.to_thread.run_sync(self.account_state, ref.kind, ref.code)
        except Exception as error:  # noqa: BLE001 — the database is down: answer by the default
            log.error("validation_database_unavailable", error=str(error))
            default = "0" if self.settings.validation_default_result == "accept" else INVALID_ACCOUNT
            return self.validation_answer(default)
        code = validation_code(
            ref,
            state,
            now=datetime.now(self.tz),
            hours_start=self.settings.operating_hours_start,
            hours_end=self.settings.operating_hours_end,
            outside_hours_code=self.settings.validation_operating_hours_code,
        )
        status, reason = ("processed", "validation:accepted") if code == "0" else ("rejected", f"validation:{code}")
        await self.keep(InboxRecord(VALIDATION_KIND, payment.trans_id, body_text(raw), status, reason, source_ip))
        return self.validation_answer(code)

    @staticmethod
    def validation_answer(code: str) -> JSONResponse:
        return JSONResponse({"ResultCode": code, "ResultDesc": "Accepted" if code == "0" else "Rejected"})

    def account_state(self, kind: str, code: str) -> AccountState:
        with Session(self.engine) as session:
            if kind == "vehicle":
                payee = fleet.payee_for_vehicle(session, code)
            elif kind == "driver":
                payee = fleet.payee_for_driver_code(session, code)
            else:
                payee = None
        return "unknown" if payee is None else "payable"

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        checks = {"postgres": await anyio.to_thread.run_sync(self._postgres_ok)}
        checks["redis"] = await anyio.to_thread.run_sync(self._redis_ok)
        if (kind := broker_kind(self.broker)) != "redis":
            checks[kind] = await anyio.to_thread.run_sync(reachable, self.broker)
        # A broker or Redis down does not stop callbacks from being accepted, but it is reported.
        ready = checks["postgres"]
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    def _postgres_ok(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001
            return False

    def _redis_ok(self) -> bool:
        try:
            return bool(self.shared.ping())
        except Exception:  # noqa: BLE001
            return False

    async def metrics(self, request: Request) -> Response:
        # Off the event loop: a collector reads Redis at scrape time (the dead-letter depth).
        body = await anyio.to_thread.run_sync(
            lambda: b"".join(generate_latest(registry) for registry in self.metric_registries)
        )
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def measured(route_name: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        response = await endpoint(request)
        metrics.LATENCY.labels(route_name).observe(time.perf_counter() - started)
        metrics.REQUESTS.labels(route_name, outcome(response)).inc()
        return response

    return wrapper


def outcome(response: Response) -> str:
    return {200: "answered", 404: "refused", 403: "refused", 503: "unavailable"}.get(
        response.status_code, "rejected"
    )


def build_app(settings: Settings, *, engine: Engine | None = None, broker: dramatiq.Broker | None = None) -> Starlette:
    """The ingest app for ``settings``; tests pass their own engine and broker.

    ``WeakSecrets`` (before anything is connected) when a token is a placeholder or too short,
    unless under ``fleetpay dev``."""
    from workers.broker import build_broker, redis_client

    settings.require_strong_secrets()
    if settings.dev_mode and (weak := settings.weak_secrets()):
        log.warning("weak_tokens_served_under_fleetpay_dev", problems=weak)
    engine = engine or make_engine(settings.require_database_url(), pool_size=settings.database_pool_size)
    broker = broker or build_broker(settings)
    shared = redis_client(settings)
    ingest = Ingest(settings, engine, broker, shared)

    routes = [
        CallbackPath(f"/cb/{{token}}/{r.path}", measured(r.path, ingest.callback_endpoint(r)))
        for r in CALLBACK_ROUTES
    ]
    routes += [
        CallbackPath(f"/at/{{token}}/{path}", measured(path, endpoint))
        for path, endpoint in AfricasTalking(ingest).endpoints().items()
    ]
    routes += [
        CallbackPath("/cb/{token}/c2b/validate", measured("c2b/validate", ingest.validate)),
        Route("/healthz", ingest.healthz),
        Route("/readyz", ingest.readyz),
        Route("/metrics", ingest.metrics),
    ]
    routes += admin_routes(settings, broker, shared, make_sessionmaker(engine))
    ingest.metric_registries.append(broker_metrics(settings, broker, shared))
    ingest.metric_registries.append(books_metrics(engine, settings.timezone))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ingest.writer.start()
        try:
            yield
        finally:
            await ingest.writer.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    # No redirect, ever: Starlette would answer ``…/c2b/confirm/`` with a 307 to the ``Host`` the
    # caller sent, the token in its ``Location``. A path ending in ``/`` is an unknown URL (404).
    app.router.redirect_slashes = False
    app.state.ingest = ingest
    return app
