"""The operator API ``/admin/…``: the dead-letter queue over HTTP, and its depth on ``/metrics``;
the money requests (``ingest.admin_requests``); its OpenAPI document (``ingest.admin_openapi``).

Every route but the document needs ``Authorization: Bearer <token>`` and answers JSON. The token is
a user's (``fleetpay users token USERNAME``): the call acts as that user, with their role (viewer
reads, admin requeues and purges; money requests as in the console). ``FLEETPAY_ADMIN_TOKEN``, one
token for a whole team, still works as an admin (dead letters, reading requests), but moves no
money: what it does is nobody's. The dead-letter documents are those of ``fleetpay dlq … --json``.

| route | body | answer |
|---|---|---|
| ``GET /admin/dlq?queue=&actor=&limit=`` | | 200 ``{"dead_letters": [...], "depth": {queue: n}}`` |
| ``GET /admin/dlq/{id}`` | | 200 the dead letter in full |
| ``POST /admin/dlq/requeue`` | ``{"ids": [...]}`` or ``{"all": true, "actor"?, "queue"?}`` | 200 ``{"requeued": [...]}`` |
| ``POST /admin/dlq/purge`` | ``{"ids": [...]}`` or ``{"older_than": "7d", "actor"?, "queue"?}`` | 200 ``{"purged": [...]}`` |

Errors are ``{"error": <code>, "detail": <text>}``: 401 ``unauthorized`` (missing or wrong token),
403 ``forbidden`` (the user's role may not; the shared token on a money route),
400 ``bad_request`` / ``invalid_id``, 404 ``not_found`` (with ``ids``; nothing was done), 409 ``gone``
(another operator took some of them meanwhile; the rest was done), 503 ``redis_unavailable`` /
``broker_unavailable`` (RabbitMQ, when it is the broker).
Every input is bounded before it is parsed: a body with an overlong number or nested too deep
(``schemas.json_body.decode_json``, as for callbacks), an overlong ``older_than`` or ``limit``,
gets 400 ``bad_request``, never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import dramatiq
import redis
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.audit import record_action
from db.users import role_at_least, user_for_token
from fleetpay.settings import Settings
from ingest.bodies import BodyTooLarge, read_limited
from ingest.callers import client_ip, token_matches
from schemas.callbacks import InvalidCallback
from schemas.json_body import decode_json
from workers.broker import UNAVAILABLE as BROKER_UNAVAILABLE
from workers.dead_letters import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    DeadLetter,
    DeadLetterError,
    DeadLettersBusy,
    DeadLetterNotFound,
    DeadLetters,
    InvalidId,
    Moved,
    parse_duration,
)

log = structlog.get_logger("fleetpay.admin")

ADMIN_BODY_MAX_BYTES = 256 * 1024  # up to LIST_LIMIT_MAX ids
DEPTH_METRIC = "fleetpay_dlq_depth"
QUEUE_METRIC = "fleetpay_queue_messages"
DURATION_MAX_CHARS = 32  # "older_than": "30m", "1d12h"; nothing an operator types is longer
LIMIT_MAX_CHARS = 6  # "limit": up to LIST_LIMIT_MAX


def problem(status_code: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="fleetpay-admin"'} if status_code == 401 else None
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code, headers=headers)


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Caller:
    """Who calls: a user (by their token), or whoever holds the shared ``FLEETPAY_ADMIN_TOKEN``."""

    username: str
    role: str
    shared: bool = False


SHARED = Caller("FLEETPAY_ADMIN_TOKEN", "admin", shared=True)


class AdminApi:
    """The state behind the admin routes: the tokens, the database and the dead-letter sets."""

    def __init__(self, settings: Settings, dead_letters: DeadLetters, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.sessions = sessions

    # --- the steps every route shares -----------------------------------------------------

    def _user(self, token: str) -> Caller | None:
        with self.sessions.begin() as session:
            user = user_for_token(session, token)
            return None if user is None else Caller(user.username, user.role)

    async def caller(self, request: Request) -> Caller | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return None
        shared = self.settings.admin_token.get_secret_value()
        # An empty configured token would accept an empty bearer: refuse everyone instead.
        if shared and token_matches(given, shared):
            return SHARED
        return await anyio.to_thread.run_sync(self._user, given)

    def refused(self, request: Request, had_token: bool) -> Response:
        log.warning("admin_refused", path=request.url.path, source_ip=client_ip(request, self.settings.trusted_proxies),
                    had_token=had_token)
        return problem(401, "unauthorized", "send Authorization: Bearer <a user's token> (fleetpay users token USERNAME)")

    async def body(self, request: Request, allowed: frozenset[str], *, empty_ok: bool = False) -> dict[str, Any]:
        try:
            raw = await read_limited(request, ADMIN_BODY_MAX_BYTES)
            if empty_ok and not raw.strip():
                return {}
            # The callbacks' decoder: numbers and nesting bounded before they are parsed.
            body = decode_json(raw or b"null")
        except BodyTooLarge as error:
            raise BadRequest(f"the body is over {ADMIN_BODY_MAX_BYTES} bytes") from error
        except InvalidCallback as error:
            raise BadRequest(f"the body is not JSON we accept ({error.reason})") from error
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if unknown := sorted(set(body) - allowed):
            raise BadRequest(f"unknown fields {unknown}; allowed: {sorted(allowed)}")
        return body

    async def act(self, work: Callable[[], Response]) -> Response:
        """Run ``work`` (blocking Redis calls) off the event loop; its errors as answers."""
        try:
            return await anyio.to_thread.run_sync(work)
        except InvalidId as error:
            return problem(400, "invalid_id", str(error))
        except DeadLetterNotFound as error:
            return problem(404, "not_found", str(error), ids=error.message_ids)
        except DeadLettersBusy as error:
            return problem(409, "busy", str(error))
        except DeadLetterError as error:
            return problem(400, "bad_request", str(error))
        except redis.RedisError as error:
            log.error("admin_redis_unavailable", error=str(error))
            return problem(503, "redis_unavailable", "Redis is not answering")
        except BROKER_UNAVAILABLE as error:  # RabbitMQ: Redis is the broker's own error above
            log.error("admin_broker_unavailable", error=str(error))
            return problem(503, "broker_unavailable", "the message broker (RabbitMQ) is not answering")
        except SQLAlchemyError as error:  # recording a requeue or purge in operator_actions
            log.error("admin_database_unavailable", error=str(error))
            return problem(503, "database_unavailable", "PostgreSQL is not answering")

    def endpoint(self, handler: Callable[[Request], Awaitable[Response]], *, role: str = "viewer",
                 shared: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for callers whose role is ``role`` or above (and, unless ``shared``, never
        the shared token); the caller is ``request.state.caller``."""

        async def guarded(request: Request) -> Response:
            try:
                caller = await self.caller(request)
            except SQLAlchemyError as error:
                log.error("admin_database_unavailable", error=str(error))
                return problem(503, "database_unavailable", "PostgreSQL is not answering")
            if caller is None:
                return self.refused(request, "authorization" in request.headers)
            if caller.shared and not shared:
                return problem(403, "forbidden", "the shared FLEETPAY_ADMIN_TOKEN moves no money: use a user's token "
                                                 "(fleetpay users token USERNAME), so what is done is someone's")
            if not role_at_least(caller.role, role):
                return problem(403, "forbidden", f"{caller.username} is {caller.role}: this needs {role} or above")
            request.state.caller = caller
            try:
                return await handler(request)
            except BadRequest as error:
                return problem(400, "bad_request", str(error))
            except ClientDisconnect:
                log.info("admin_client_disconnected", path=request.url.path)
                return Response(status_code=400)  # nobody reads it

        return guarded

    # --- routes ---------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - {"queue", "actor", "limit"})
        if unknown:
            raise BadRequest(f"unknown parameters {unknown}; allowed: actor, limit, queue")
        try:
            text = params.get("limit", str(LIST_LIMIT_DEFAULT))
            if len(text) > LIMIT_MAX_CHARS:
                raise ValueError(text)
            limit = int(text)
        except ValueError as error:
            raise BadRequest(f"limit must be a whole number from 1 to {LIST_LIMIT_MAX}") from error

        def work() -> Response:
            letters = self.dead_letters.list(queue=params.get("queue"), actor=params.get("actor"), limit=limit)
            return JSONResponse(
                {"dead_letters": [letter.summary() for letter in letters], "depth": self.dead_letters.depth()}
            )

        return await self.act(work)

    async def show(self, request: Request) -> Response:
        message_id = request.path_params["message_id"]
        return await self.act(lambda: JSONResponse(self.dead_letters.get(message_id).document()))

    async def requeue(self, request: Request) -> Response:
        body = await self.body(request, frozenset({"ids", "all", "actor", "queue"}))
        select = self.selection(body, everything_field="all")

        def work() -> Response:
            letters = select()
            return self.moved(self.recorded(request, "dead_letter_requeued", self.dead_letters.requeue(letters)), "requeued")

        return await self.act(work)

    async def purge(self, request: Request) -> Response:
        body = await self.body(request, frozenset({"ids", "older_than", "actor", "queue"}))
        select = self.selection(body, everything_field="older_than")

        def work() -> Response:
            letters = select()
            return self.moved(self.recorded(request, "dead_letter_purged", self.dead_letters.purge(letters)), "purged")

        return await self.act(work)

    def recorded(self, request: Request, action: str, moved: Moved) -> Moved:
        """``moved``, once recorded in ``operator_actions`` under the caller's name, as the console does."""
        with self.sessions.begin() as session:
            record_action(session, action=action, subject=",".join(moved.done)[:500] or "-",
                          operator=request.state.caller.username, reason="admin api",
                          detail={"done": moved.done, "gone": moved.gone})
        return moved

    def selection(self, body: dict[str, Any], *, everything_field: str) -> Callable[[], list[DeadLetter]]:
        """Which dead letters a requeue or purge body names: ``ids``, or ``all`` /
        ``older_than`` with the optional ``actor`` and ``queue`` filters (the rule is
        ``DeadLetters.select``'s; here only the body's types are checked)."""
        ids, wide = body.get("ids"), body.get(everything_field)
        filters = {key: body.get(key) for key in ("actor", "queue")}
        for key, value in filters.items():
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"{key} must be a string")
        if ids is not None and (not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids)):
            raise BadRequest("ids must be a non-empty list of message ids")
        age = None
        if everything_field == "all":
            if wide not in (None, True, False):
                raise BadRequest("all must be true")
        elif wide is not None:
            if not isinstance(wide, str) or len(wide) > DURATION_MAX_CHARS:
                raise BadRequest("older_than must be a duration such as 30m, 12h, 7d")
            try:
                age = parse_duration(wide)
            except (ValueError, OverflowError) as error:
                raise BadRequest(f"older_than must be a duration such as 30m, 12h, 7d ({error})") from error
        selected = bool(wide) if everything_field == "all" else age is not None
        return lambda: self.dead_letters.select(ids=ids, wide=selected, wide_name=everything_field, older_than=age, **filters)

    @staticmethod
    def moved(moved: Moved, verb: str) -> Response:
        document = {verb: moved.done}
        if moved.gone:
            return problem(409, "gone", "another requeue or purge took some of them first", **document, ids=moved.gone)
        return JSONResponse(document)


def admin_routes(settings: Settings, broker: dramatiq.Broker, shared: redis.Redis,
                 sessions: sessionmaker[Session]) -> list[Route]:
    """The ``/admin…`` routes for ``settings`` on ``broker``. A placeholder or short admin token
    never gets this far: ``build_app`` refuses it (``Settings.require_strong_secrets``)."""
    from ingest.admin_openapi import openapi
    from ingest.admin_requests import request_routes

    api = AdminApi(settings, DeadLetters.from_settings(settings, broker, shared), sessions)
    return [
        Route("/admin/openapi.json", openapi, methods=["GET"]),
        Route("/admin/dlq", api.endpoint(api.index), methods=["GET"]),
        Route("/admin/dlq/requeue", api.endpoint(api.requeue, role="admin"), methods=["POST"]),
        Route("/admin/dlq/purge", api.endpoint(api.purge, role="admin"), methods=["POST"]),
        Route("/admin/dlq/{message_id}", api.endpoint(api.show), methods=["GET"]),
        *request_routes(api),
    ]


class BrokerDepth(Collector):
    """``fleetpay_dlq_depth{queue}`` and ``fleetpay_queue_messages{queue,state}``, read from the
    broker at each scrape. When it does not answer a gauge has no samples and the rest of
    ``/metrics`` is served as usual."""

    def __init__(self, dead_letters: DeadLetters) -> None:
        self.dead_letters = dead_letters

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        dead, waiting = self._families()
        try:
            for queue, counts in self.dead_letters.depths().items():
                dead.add_metric([queue], counts["dead"])
                for state in ("ready", "delayed"):
                    waiting.add_metric([queue, state], counts[state])
        except Exception as error:  # noqa: BLE001 — a scrape must never fail for these gauges
            log.warning("broker_depth_unavailable", error=str(error))
            dead, waiting = self._families()
        yield dead
        yield waiting

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily(DEPTH_METRIC, "Messages in the dead-letter queue, by queue.", labels=["queue"]),
                GaugeMetricFamily(QUEUE_METRIC, "Messages waiting for a worker, by queue and state (ready, delayed "
                                  "for a retry).", labels=["queue", "state"]))


def broker_metrics(settings: Settings, broker: dramatiq.Broker, shared: redis.Redis) -> CollectorRegistry:
    """A registry of the app's own, holding the depth gauges: each app reads its own broker, and
    building several apps in one process registers nothing twice."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BrokerDepth(DeadLetters.from_settings(settings, broker, shared)))
    return registry
