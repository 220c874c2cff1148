"""The dramatiq broker, chosen by URL, and the only module that knows how each broker stores things.

``FLEETPAY_BROKER_URL`` picks it: ``redis://…`` (dramatiq's Redis broker; unset, the broker is
``FLEETPAY_REDIS_URL``, as before) or ``amqp://…`` (dramatiq's RabbitMQ broker, with publisher
confirms and durable queues). Redis stays the home of shared, disposable state on both: the Daraja
OAuth token, the rate limiter and the failure records (``workers.failures``); losing it loses no
money (``docs/operations.md``).

Delivery is at least once: a message may run twice (a worker dies after committing, the sweeper
re-enqueues a row that is also still queued). Every actor is therefore idempotent, by a key its
docstring names. Messages that keep failing land in the broker's dead letters (``fleetpay dlq``).

Above this module the code is the same on both brokers. What dramatiq offers no public way to do
is done here, says so, and is pinned by a test against the real broker (``tests/flow/test_enqueuer.py``,
``tests/flow/test_dlq.py``, ``tests/flow/test_rabbitmq_broker.py``):
  - Redis: enqueueing many messages in one pipeline (``RedisBroker._dispatch`` has no batch form);
    reading and taking dead letters (dramatiq has no dead-letter API; its Lua script's keys);
  - RabbitMQ: the dead-letter retention (a module constant read when the ``.XQ`` queue is declared).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from uuid import uuid4

import dramatiq
import pika
import pika.exceptions
import redis
from dramatiq import Message
from dramatiq.brokers import rabbitmq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name, xq_name

from fleetpay.settings import Settings

NAMESPACE = "fleetpay"
DEAD_MESSAGE_TTL_MS = 30 * 24 * 3600 * 1000  # dead letters are kept 30 days for operators
AMQP_SCHEMES = ("amqp", "amqps")
# A broker that does not answer: the errors callers turn into "unavailable" answers.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.RedisError, pika.exceptions.AMQPError, dramatiq.errors.BrokerConnectionError,
)
MESSAGE_ID_PATTERN = re.compile(rb'"message_id"\s*:\s*"([^"]{1,64})"')

# dramatiq reads this when it declares a queue's ``.XQ`` (its ``x-message-ttl``), with no parameter
# for it; the retention is the same 30 days as on Redis. A queue declared with another TTL keeps it
# (RabbitMQ refuses to change a queue's arguments): docs/operations.md says how to move.
rabbitmq.DEAD_MESSAGE_TTL = DEAD_MESSAGE_TTL_MS


def broker_url(settings: Settings) -> str:
    return settings.broker_url or settings.require_redis_url()


def is_rabbitmq(url: str) -> bool:
    return url.split(":", 1)[0].lower() in AMQP_SCHEMES


def redis_client(settings: Settings, url: str | None = None) -> redis.Redis:
    """The shared Redis (or ``url``). Short connect timeout: when Redis is down the ingest must
    still answer fast."""
    return redis.Redis.from_url(url or settings.require_redis_url(), socket_connect_timeout=1, socket_timeout=5)


def build_broker(settings: Settings) -> dramatiq.Broker:
    url = broker_url(settings)
    if is_rabbitmq(url):
        return RabbitmqBroker(url=url, confirm_delivery=True)
    return RedisBroker(client=redis_client(settings, url), namespace=NAMESPACE, dead_message_ttl=DEAD_MESSAGE_TTL_MS)


def broker_kind(broker: dramatiq.Broker) -> str:
    """``redis`` or ``rabbitmq``: what ``/readyz`` and the docs call it."""
    return "redis" if isinstance(broker, RedisBroker) else "rabbitmq"


def close(broker: dramatiq.Broker) -> None:
    """Let go of the broker's connections (a command is done with it)."""
    if isinstance(broker, RedisBroker):
        broker.client.close()
    else:
        broker.close()


def reachable(broker: dramatiq.Broker) -> bool:
    """Does the broker answer now? (``/readyz``)"""
    try:
        if isinstance(broker, RedisBroker):
            return bool(broker.client.ping())
        connection = pika.BlockingConnection(broker.parameters)  # a probe of its own: no thread's channel
        connection.close()
        return True
    except Exception:  # noqa: BLE001 — any failure means "not now"
        return False


def enqueue_many(broker: dramatiq.Broker, messages: Sequence[Message]) -> None:
    """``broker.enqueue`` (without delay) for each message, as few round trips as the broker allows.

    RabbitMQ: each message is published and confirmed in turn (dramatiq's channel waits for each
    confirm); the ingest's messages each carry up to ``FLEETPAY_APPLY_BATCH_MAX`` callbacks, so one
    confirm covers a batch. Redis: all in one pipeline, two round trips (redis-py first checks that
    the script is loaded)."""
    if not messages:
        return
    if not isinstance(broker, RedisBroker):
        for message in messages:
            broker.enqueue(message)
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


def queue_lengths(broker: dramatiq.Broker, queue: str) -> dict[str, int]:
    """Messages waiting on ``queue``: ``ready`` to be taken, ``delayed`` (retries waiting out their
    backoff). Not counted: those a worker holds now. Redis keeps each as a list of message ids
    (``dispatch.lua``); RabbitMQ's count is the queue's own (a passive declare)."""
    names = {"ready": queue, "delayed": dq_name(queue)}
    if isinstance(broker, RedisBroker):
        pipe = broker.client.pipeline(transaction=False)
        for name in names.values():
            pipe.llen(f"{broker.namespace}:{name}")
        return dict(zip(names, (int(length) for length in pipe.execute()), strict=True))
    connection = pika.BlockingConnection(broker.parameters)
    try:
        return {state: _message_count(connection, name) for state, name in names.items()}
    finally:
        _close_connection(connection)


def _message_count(connection: Any, queue: str) -> int:
    channel = connection.channel()
    try:
        return int(channel.queue_declare(queue, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:  # not declared yet: nothing was ever sent there
            return 0
        raise
    finally:
        if channel.is_open:
            channel.close()


# --- dead letters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadEntry:
    """One dead letter as the broker keeps it: ``member`` is the broker's own name for the entry."""

    queue: str
    member: str
    dead_ms: float
    data: bytes


class DeadStore(Protocol):
    """Where a broker keeps its dead letters; ``workers.dead_letters`` reads and moves them."""

    def count(self, queue: str) -> int: ...

    def newest(self, queue: str, *, before_ms: float | None, scan_max: int) -> Iterator[DeadEntry]:
        """Entries dead-lettered before ``before_ms`` (all when None), newest first."""

    def matching(self, queue: str, message_ids: set[str], *, scan_max: int) -> Iterator[DeadEntry]:
        """Entries of these dramatiq message ids, in no order."""

    def take(self, entry: DeadEntry) -> bytes | None:
        """Remove the entry and return it; None when another caller took it first."""

    def restore(self, entry: DeadEntry) -> None:
        """Put back an entry taken (its enqueue failed): never lose a message between the two."""


def dead_store(broker: dramatiq.Broker) -> DeadStore:
    if isinstance(broker, RedisBroker):
        return RedisDeadSets(broker)
    if isinstance(broker, RabbitmqBroker):
        return RabbitDeadQueues(broker)
    raise TypeError(f"no dead letters on {type(broker).__name__}")


def _message_id(data: bytes) -> str | None:
    match = MESSAGE_ID_PATTERN.search(data)  # cheap, before decoding the message
    return match.group(1).decode() if match else None


class RedisDeadSets:
    """dramatiq's Redis dead letters (``dramatiq/brokers/redis/dispatch.lua``, ``nack``): when a
    worker rejects a message after its last retry, ``<namespace>:<queue>.XQ`` (a sorted set) gets
    the message's Redis id scored by the dead-letter time in ms, and ``<namespace>:<queue>.XQ.msgs``
    (a hash) the message. Broker maintenance deletes both after ``dead_message_ttl``."""

    PAGE_SIZE = 500
    # Take an entry out of the dead set; only the caller that removed it gets its data.
    CLAIM_SCRIPT = """
    if redis.call("zrem", KEYS[1], ARGV[1]) == 1 then
        local data = redis.call("hget", KEYS[2], ARGV[1])
        redis.call("hdel", KEYS[2], ARGV[1])
        return data or false
    end
    return false
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.client = broker.client
        self.namespace = broker.namespace
        self._claim = self.client.register_script(self.CLAIM_SCRIPT)

    def _set(self, queue: str) -> str:
        return f"{self.namespace}:{xq_name(queue)}"

    def _messages(self, queue: str) -> str:
        return f"{self.namespace}:{xq_name(queue)}.msgs"

    def count(self, queue: str) -> int:
        return int(self.client.zcard(self._set(queue)))

    def newest(self, queue: str, *, before_ms: float | None, scan_max: int) -> Iterator[DeadEntry]:
        top: float | str = "+inf" if before_ms is None else before_ms
        for start in range(0, scan_max, self.PAGE_SIZE):
            members = self.client.zrevrangebyscore(self._set(queue), top, "-inf", start=start, num=self.PAGE_SIZE,
                                                   withscores=True)
            if not members:
                return
            datas = self.client.hmget(self._messages(queue), [member for member, _ in members])
            for (member, score), data in zip(members, datas):
                if data is not None:  # None: expired between the two reads
                    yield DeadEntry(queue, member.decode(), score, data)
            if len(members) < self.PAGE_SIZE:
                return

    def matching(self, queue: str, message_ids: set[str], *, scan_max: int) -> Iterator[DeadEntry]:
        for count, (member, data) in enumerate(self.client.hscan_iter(self._messages(queue), count=self.PAGE_SIZE), 1):
            if count > scan_max:
                return
            if _message_id(data) in message_ids:
                score = self.client.zscore(self._set(queue), member)
                if score is not None:
                    yield DeadEntry(queue, member.decode(), score, data)

    def take(self, entry: DeadEntry) -> bytes | None:
        return self._claim(keys=[self._set(entry.queue), self._messages(entry.queue)], args=[entry.member]) or None

    def restore(self, entry: DeadEntry) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._messages(entry.queue), entry.member, entry.data)
        pipe.zadd(self._set(entry.queue), {entry.member: entry.dead_ms})
        pipe.execute()


class RabbitDeadQueues:
    """dramatiq's RabbitMQ dead letters: every queue is declared with ``x-dead-letter-routing-key``
    ``<queue>.XQ``, so a message a worker rejects after its last retry is moved there by RabbitMQ,
    which adds an ``x-death`` header with the time; the ``.XQ`` queue's ``x-message-ttl`` expires it.

    A queue can only be read by taking messages: a read gets every entry on a channel of its own,
    unacknowledged, and closes the channel, which gives them all back in their order. While one
    caller holds them another sees none of them, so a take is atomic: of two operators requeuing
    the same letter, one gets it. ``member`` is a digest of the body (equal bodies are equal
    entries). Time resolution of ``x-death`` is one second."""

    RESTORED_AT_HEADER = "x-fleetpay-dead-ms"

    def __init__(self, broker: RabbitmqBroker) -> None:
        self.broker = broker

    def _channel(self) -> Any:
        return pika.BlockingConnection(self.broker.parameters).channel()

    def count(self, queue: str) -> int:
        channel = self._channel()
        try:
            return int(channel.queue_declare(xq_name(queue), passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 404:  # never declared: nothing ever died there
                return 0
            raise
        finally:
            _close(channel)

    def _all(self, queue: str, scan_max: int) -> list[DeadEntry]:
        """Every entry, oldest first, given back when the channel closes."""
        channel = self._channel()
        found: list[DeadEntry] = []
        try:
            for _ in range(scan_max):
                method, properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
                if method is None:
                    break
                found.append(DeadEntry(queue, _member(body), _dead_ms(properties), body))
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 404:  # 404: never declared, nothing ever died there
                raise
        finally:
            _close(channel)
        return found

    def newest(self, queue: str, *, before_ms: float | None, scan_max: int) -> Iterator[DeadEntry]:
        entries = [entry for entry in self._all(queue, scan_max) if before_ms is None or entry.dead_ms <= before_ms]
        yield from sorted(entries, key=lambda entry: entry.dead_ms, reverse=True)

    def matching(self, queue: str, message_ids: set[str], *, scan_max: int) -> Iterator[DeadEntry]:
        yield from (entry for entry in self._all(queue, scan_max) if _message_id(entry.data) in message_ids)

    def take(self, entry: DeadEntry) -> bytes | None:
        """Walk the queue to the entry and acknowledge it alone; the rest goes back on close.
        One walk per entry: requeuing thousands at once is slow, not wrong."""
        channel = self._channel()
        try:
            while True:
                method, _, body = channel.basic_get(xq_name(entry.queue), auto_ack=False)
                if method is None:
                    return None
                if _member(body) == entry.member:
                    channel.basic_ack(method.delivery_tag)
                    return body
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 404:
                return None
            raise
        finally:
            _close(channel)

    def restore(self, entry: DeadEntry) -> None:
        self.broker.channel.basic_publish(
            exchange="", routing_key=xq_name(entry.queue), body=entry.data,
            properties=pika.BasicProperties(delivery_mode=2, headers={self.RESTORED_AT_HEADER: int(entry.dead_ms)}),
        )


def _member(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def _dead_ms(properties: Any) -> float:
    headers = properties.headers or {}
    if RabbitDeadQueues.RESTORED_AT_HEADER in headers:
        return float(headers[RabbitDeadQueues.RESTORED_AT_HEADER])
    deaths = headers.get("x-death") or []
    moment = deaths[0].get("time") if deaths else None
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return aware.timestamp() * 1000
    return float(moment) * 1000 if moment is not None else float(current_millis())


def _close(channel: Any) -> None:
    _close_connection(channel.connection)


def _close_connection(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001, S110 — already closed by the broker
        pass
