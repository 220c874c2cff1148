"""What a command says when the system it needs does not answer: one line naming which part and
how to fix it, never a traceback (``--debug`` shows it). Exit codes are in docs/operations.md."""

from __future__ import annotations

from urllib.parse import urlsplit

import dramatiq.errors
import httpx
import pika.exceptions
import redis
from sqlalchemy.exc import DBAPIError

from fleetpay.settings import Settings

EXIT_UNREACHABLE = 5


def _where(url: str | None) -> str:
    if not url:
        return "(not set)"
    parts = urlsplit(url)
    return f"{parts.hostname or parts.path}:{parts.port}" if parts.port else (parts.hostname or parts.path or url)


def explain(error: BaseException, settings: Settings) -> str | None:
    """The one line for an error that means a part of the system is out of reach; None otherwise."""
    if isinstance(error, DBAPIError) and error.connection_invalidated or _is_connect_failure(error):
        return (f"PostgreSQL is not reachable at {_where(settings.database_url)} (FLEETPAY_DATABASE_URL): "
                "start it, or run `fleetpay dev` in this folder")
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return (f"Redis is not reachable at {_where(settings.redis_url)} (FLEETPAY_REDIS_URL): "
                "start it, or run `fleetpay dev` in this folder")
    if isinstance(error, pika.exceptions.AMQPConnectionError | dramatiq.errors.BrokerConnectionError):
        return (f"RabbitMQ is not reachable at {_where(settings.broker_url)} (FLEETPAY_BROKER_URL): "
                "start it, or check the URL's host, user, password and vhost")
    if isinstance(error, httpx.TransportError):
        return (f"Daraja is not reachable at {_where(settings.daraja_base_url)} (FLEETPAY_DARAJA_BASE_URL): "
                "start the simulator (`fleetpay dev` or `fleetpay simulator`), or check the URL")
    return None


def _is_connect_failure(error: BaseException) -> bool:
    """psycopg2's OperationalError at connect (refused, unknown host, timeout) reaches us wrapped."""
    if not isinstance(error, DBAPIError):
        return False
    text = str(error.orig).lower()
    return any(word in text for word in ("could not connect", "connection refused", "could not translate host",
                                         "timeout expired", "server closed the connection"))
