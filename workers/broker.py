"""The dramatiq broker: Redis, from settings.

Delivery is at least once: a message may run twice (a worker dies after committing, the sweeper
re-enqueues a row that is also still queued). Every actor is therefore idempotent, by a key its
docstring names. Messages that keep failing land in dramatiq's dead-letter set (``fleetpay dlq``).
"""

from __future__ import annotations

import redis
from dramatiq.brokers.redis import RedisBroker

from fleetpay.settings import Settings

NAMESPACE = "fleetpay"
DEAD_MESSAGE_TTL_MS = 30 * 24 * 3600 * 1000  # dead letters are kept 30 days for operators


def redis_client(settings: Settings) -> redis.Redis:
    # Short connect timeout: when Redis is down the ingest must still answer fast.
    return redis.Redis.from_url(
        settings.require_redis_url(), socket_connect_timeout=1, socket_timeout=5
    )


def build_broker(settings: Settings) -> RedisBroker:
    return RedisBroker(
        client=redis_client(settings), namespace=NAMESPACE, dead_message_ttl=DEAD_MESSAGE_TTL_MS
    )
