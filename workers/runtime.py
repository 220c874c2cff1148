"""The worker process's context: settings, dramatiq's broker, the shared Redis and one database engine.

dramatiq binds actors to the global broker when their module is imported, so this module sets
the broker up on import; every actor module imports it first. The engine opens lazily.
"""

from __future__ import annotations

from functools import lru_cache

import dramatiq
from dramatiq.middleware.prometheus import Prometheus
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker
from fleetpay.logs import configure_logging
from fleetpay.settings import get_settings
from workers.broker import DEAD_MESSAGE_TTL_MS, NAMESPACE, build_broker, redis_client
from workers.daraja.client import DarajaClient
from workers.failures import FailureRecorder

settings = get_settings()
configure_logging(level=settings.log_level, json=settings.log_json)
broker = build_broker(settings)
shared = redis_client(settings)  # failure records and the OAuth token, whichever the broker
if settings.worker_metrics_enabled:
    # dramatiq's own: messages, errors, retries, durations; served on dramatiq_prom_port (9191).
    broker.add_middleware(Prometheus())
# The final error of every failure, and which rows have a message retrying or dead (the sweeps
# leave those alone): workers.failures.
broker.add_middleware(FailureRecorder(shared, namespace=NAMESPACE, retention_ms=DEAD_MESSAGE_TTL_MS))
dramatiq.set_broker(broker)

RETRY_OPTIONS = {
    "max_retries": settings.message_retries_max,
    "min_backoff": settings.message_min_backoff_ms,
    "max_backoff": settings.message_max_backoff_ms,
}


@lru_cache(maxsize=1)
def sessions() -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(settings.require_database_url(), pool_size=settings.database_pool_size))


@lru_cache(maxsize=1)
def daraja() -> DarajaClient:
    return DarajaClient.from_settings(settings, shared)
