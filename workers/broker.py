"""The dramatiq broker: Redis, from settings.

Delivery is at least once: a message may run twice (a worker dies after committing, the sweeper
re-enqueues a row that is also still queued). Every actor is therefore idempotent, by a key its
docstring names. Messages that keep failing land in dramatiq's dead-letter set (``fleetpay dlq``).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import uuid4

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

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


def enqueue_many(broker: RedisBroker, messages: Sequence[Message]) -> None:
    """``RedisBroker.enqueue`` (without delay) for each message, in one pipeline: two round trips
    for all of them (redis-py first checks that the script is loaded), not one a message. Each is
    stored exactly as ``RedisBroker.enqueue`` stores it: a copy with its own ``redis_message_id``,
    dramatiq's ``dispatch`` script with the ``enqueue`` command, and the broker's ``enqueue``
    middleware hooks around it."""
    if not messages:
        return
    # Unique per enqueue, as dramatiq makes it: a message may be enqueued again by a sweeper.
    copies = [message.copy(options={"redis_message_id": str(uuid4())}) for message in messages]
    for message in copies:
        broker.emit_before("enqueue", message, None)
    with broker.client.pipeline(transaction=False) as pipeline:
        for message in copies:
            broker.scripts["dispatch"](keys=[broker.namespace], args=_dispatch_args(broker, message), client=pipeline)
        pipeline.execute()
    for message in copies:
        broker.emit_after("enqueue", message, None)


def _dispatch_args(broker: RedisBroker, message: Message) -> list[bytes | str | int]:
    # The arguments RedisBroker._dispatch("enqueue") passes to the script (dramatiq 2.2.1).
    return [
        "enqueue",
        current_millis(),
        message.queue_name,
        broker.broker_id,
        broker.heartbeat_timeout,
        broker.dead_message_ttl,
        broker._should_do_maintenance("enqueue"),
        broker._max_unpack_size(),
        message.options["redis_message_id"],
        message.encode(),
    ]
