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
    reading and taking dead letters and queue lengths (dramatiq has no API; its Lua script's keys);
  - RabbitMQ: the dead-letter retention (a module constant read when the ``.XQ`` queue is declared)
    and the ``.XQ`` queue's type (``FleetpayRabbitmqBroker``).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import uuid4

import dramatiq
import pika
import pika.exceptions
import redis
import structlog
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
log = structlog.get_logger("fleetpay.broker")
MESSAGE_ID_PATTERN = re.compile(rb'"message_id"\s*:\s*"([^"]{1,64})"')

# dramatiq reads this when it declares a queue's ``.XQ`` (its ``x-message-ttl``), with no parameter
# for it; the retention is the same 30 days as on Redis. A queue declared with another TTL keeps it
# (RabbitMQ refuses to change a queue's arguments): docs/operations.md ("Retention") says what to do.
rabbitmq.DEAD_MESSAGE_TTL = DEAD_MESSAGE_TTL_MS


def broker_url(settings: Settings) -> str:
    return settings.broker_url or settings.require_redis_url()


def is_rabbitmq(url: str) -> bool:
    return url.split(":", 1)[0].lower() in AMQP_SCHEMES


def redis_client(settings: Settings, url: str | None = None) -> redis.Redis:
    """The shared Redis (or ``url``). Short connect timeout: when Redis is down the ingest must
    still answer fast."""
    return redis.Redis.from_url(url or settings.require_redis_url(), socket_connect_timeout=1, socket_timeout=5)


# pika's connection settings where the URL names none: a publish blocked by a RabbitMQ memory or
# disk alarm fails within about 30 s (dramatiq tries 6 connections, 5 s each) instead of hanging
# the ingest's enqueue thread (the sweep catches up), and a host that does not answer is given up
# on in seconds.
AMQP_DEFAULTS = {"blocked_connection_timeout": "5", "socket_timeout": "5", "connection_attempts": "3",
                 "retry_delay": "1", "heartbeat": "30"}


def amqp_url(url: str, defaults: dict[str, str] = AMQP_DEFAULTS) -> str:
    """``url`` with ``defaults`` for the pika parameters it does not set itself; each of several
    URLs (``;``-separated: the nodes of a cluster, as dramatiq takes them) alike."""
    return ";".join(_with_defaults(one, defaults) for one in url.split(";"))


def _with_defaults(url: str, defaults: dict[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**defaults, **dict(parse_qsl(parts.query))})))


class FleetpayRabbitmqBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker, whose dead-letter queues (``.XQ``) are always classic queues.

    dramatiq declares every queue without a type, so on a vhost whose default type is quorum (the
    advice for a cluster: docs/operations.md) the dead letters would be quorum too, and the
    dead-letter tools read a queue by taking its messages and giving them back: on RabbitMQ 4 each
    return counts toward a quorum queue's delivery limit (20 by default), past which a message with
    nowhere to go is dropped. A classic queue has no such limit. ``_declare_xq_queue`` has no public
    counterpart (dramatiq 2.2.1)."""

    def _declare_xq_queue(self, queue_name):  # type: ignore[no-untyped-def]
        """A classic queue lives on one node: while that node is down RabbitMQ refuses to declare it
        (404, "home node … is down"). Enqueueing and consuming must go on then (RabbitMQ drops what
        would be dead-lettered meanwhile; its rows are swept again once their failure records
        expire), so the refusal is logged and the channel replaced."""
        try:
            return self.channel.queue_declare(
                queue=xq_name(queue_name), durable=True,
                arguments={"x-message-ttl": rabbitmq.DEAD_MESSAGE_TTL, "x-queue-type": "classic"},
            )
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 404:
                raise
            log.error("dead_letter_queue_unavailable", queue=xq_name(queue_name), error=str(error))
            del self.channel
            return None


def build_broker(settings: Settings) -> dramatiq.Broker:
    url = broker_url(settings)
    if is_rabbitmq(url):
        return FleetpayRabbitmqBroker(url=amqp_url(url), confirm_delivery=True)
    return RedisBroker(client=redis_client(settings, url), namespace=NAMESPACE, dead_message_ttl=DEAD_MESSAGE_TTL_MS)


def _quick_connection(broker: RabbitmqBroker) -> Any:
    """A connection of its own (never a thread's: those live as long as the thread and the broker)
    that answers within seconds or fails: the broker's parameters (every node of a cluster, in
    turn) with short timeouts."""
    every = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    quick = []
    for parameters in every:
        copied = copy.copy(parameters)
        copied.socket_timeout, copied.stack_timeout = 2, 3
        copied.connection_attempts, copied.blocked_connection_timeout = 1, 5
        quick.append(copied)
    return pika.BlockingConnection(quick)


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
        _quick_connection(broker).close()
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


def queue_depths(broker: dramatiq.Broker, queues: Sequence[str]) -> dict[str, dict[str, int]]:
    """For each queue, the messages ``ready`` to be taken, ``delayed`` (retries waiting out their
    backoff) and ``dead``; not those a worker holds now. One pipeline or one connection for all.
    Redis keeps ready and delayed as lists of ids and the dead as a sorted set (``dispatch.lua``);
    RabbitMQ's counts are the queues' own (a passive declare)."""
    names = {"ready": lambda queue: queue, "delayed": dq_name, "dead": xq_name}
    if isinstance(broker, RedisBroker):
        pipe = broker.client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(f"{broker.namespace}:{queue}")
            pipe.llen(f"{broker.namespace}:{dq_name(queue)}")
            pipe.zcard(f"{broker.namespace}:{xq_name(queue)}")
        counts = iter(pipe.execute())
        return {queue: {state: int(next(counts)) for state in names} for queue in queues}
    connection = _quick_connection(broker)
    try:
        return {queue: {state: _message_count(connection, name(queue)) for state, name in names.items()}
                for queue in queues}
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
    """Where a broker keeps its dead letters; ``workers.dead_letters`` reads and moves them.
    ``exclusive``: reads hide the entries from each other while they run (RabbitMQ), so callers
    take one lock around every read and move, or a move would find its entry missing."""

    exclusive: bool

    def newest(self, queue: str, *, before_ms: float | None, scan_max: int) -> Iterator[DeadEntry]:
        """Entries dead-lettered before ``before_ms`` (all when None), newest first."""

    def matching(self, queue: str, message_ids: set[str], *, scan_max: int) -> Iterator[DeadEntry]:
        """Entries of these dramatiq message ids, in no order."""

    def take(self, entry: DeadEntry) -> bool:
        """Remove the entry for good; False when another caller took it first."""

    def move(self, entry: DeadEntry, message: Message) -> bool:
        """Enqueue ``message`` in the entry's place: the entry is gone only once the message is in
        its queue, and never lost if the enqueue fails (it raises). False when another caller took
        the entry first (nothing is enqueued)."""


def dead_store(broker: dramatiq.Broker) -> DeadStore:
    if isinstance(broker, RedisBroker):
        return RedisDeadSets(broker)
    if isinstance(broker, RabbitmqBroker):
        return RabbitDeadQueues(broker)
    raise TypeError(f"no dead letters on {type(broker).__name__}")


def _message_id(data: bytes) -> str | None:
    match = MESSAGE_ID_PATTERN.search(data)  # cheap, before decoding the message
    return match.group(1).decode() if match else None


def _truncated(queue: str, scan_max: int) -> None:
    log.warning("dead_letter_scan_truncated", queue=queue, scan_max=scan_max)


class RedisDeadSets:
    """dramatiq's Redis dead letters (``dramatiq/brokers/redis/dispatch.lua``, ``nack``): when a
    worker rejects a message after its last retry, ``<namespace>:<queue>.XQ`` (a sorted set) gets
    the message's Redis id scored by the dead-letter time in ms, and ``<namespace>:<queue>.XQ.msgs``
    (a hash) the message. Broker maintenance deletes both after ``dead_message_ttl``. A script
    takes an entry atomically: of two callers only one gets it."""

    exclusive = False
    PAGE_SIZE = 500
    CLAIM_SCRIPT = """
    if redis.call("zrem", KEYS[1], ARGV[1]) == 1 then
        local data = redis.call("hget", KEYS[2], ARGV[1])
        redis.call("hdel", KEYS[2], ARGV[1])
        return data or false
    end
    return false
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.client = broker.client
        self.namespace = broker.namespace
        self._claim = self.client.register_script(self.CLAIM_SCRIPT)

    def _set(self, queue: str) -> str:
        return f"{self.namespace}:{xq_name(queue)}"

    def _messages(self, queue: str) -> str:
        return f"{self.namespace}:{xq_name(queue)}.msgs"

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
        _truncated(queue, scan_max)

    def matching(self, queue: str, message_ids: set[str], *, scan_max: int) -> Iterator[DeadEntry]:
        for count, (member, data) in enumerate(self.client.hscan_iter(self._messages(queue), count=self.PAGE_SIZE), 1):
            if count > scan_max:
                _truncated(queue, scan_max)
                return
            if _message_id(data) in message_ids:
                score = self.client.zscore(self._set(queue), member)
                if score is not None:
                    yield DeadEntry(queue, member.decode(), score, data)

    def _take(self, entry: DeadEntry) -> bytes | None:
        return self._claim(keys=[self._set(entry.queue), self._messages(entry.queue)], args=[entry.member]) or None

    def take(self, entry: DeadEntry) -> bool:
        return self._take(entry) is not None

    def move(self, entry: DeadEntry, message: Message) -> bool:
        data = self._take(entry)
        if data is None:
            return False
        try:
            self.broker.enqueue(message)
        except BaseException:
            pipe = self.client.pipeline(transaction=True)  # put it back: never lost between the two
            pipe.hset(self._messages(entry.queue), entry.member, data)
            pipe.zadd(self._set(entry.queue), {entry.member: entry.dead_ms})
            pipe.execute()
            raise
        return True


class RabbitDeadQueues:
    """dramatiq's RabbitMQ dead letters: every queue is declared with ``x-dead-letter-routing-key``
    ``<queue>.XQ``, so a message a worker rejects after its last retry is moved there by RabbitMQ,
    which adds an ``x-death`` header with the time; the ``.XQ`` queue's ``x-message-ttl`` expires it
    (a classic queue always: ``FleetpayRabbitmqBroker``).

    A queue can only be read by taking its messages: a read gets the entries on a connection of its
    own, unacknowledged, and closes it, which gives them all back. While one caller holds them
    another sees none of them (``exclusive``). A take walks to the entry and acknowledges it alone;
    a move first publishes its message, confirmed, on the same channel, and acknowledges the entry
    only then: if anything fails before, closing the channel gives the entry back. ``member`` is a
    digest of the body (equal bodies are equal entries). ``x-death`` times are to the second."""

    exclusive = True

    def __init__(self, broker: RabbitmqBroker) -> None:
        self.broker = broker

    @contextmanager
    def _channel(self) -> Iterator[Any]:
        connection = _quick_connection(self.broker)
        try:
            yield connection.channel()
        finally:
            _close_connection(connection)  # whatever was not acknowledged goes back

    def _all(self, queue: str, scan_max: int) -> list[DeadEntry]:
        """Every entry, oldest first, given back when the connection closes."""
        found: list[DeadEntry] = []
        with self._channel() as channel:
            try:
                for _ in range(scan_max):
                    method, properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
                    if method is None:
                        return found
                    found.append(DeadEntry(queue, _member(body), _dead_ms(properties), body))
                _truncated(queue, scan_max)
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code != 404:  # 404: never declared, nothing ever died there
                    raise
        return found

    def newest(self, queue: str, *, before_ms: float | None, scan_max: int) -> Iterator[DeadEntry]:
        entries = [entry for entry in self._all(queue, scan_max) if before_ms is None or entry.dead_ms <= before_ms]
        yield from sorted(entries, key=lambda entry: entry.dead_ms, reverse=True)

    def matching(self, queue: str, message_ids: set[str], *, scan_max: int) -> Iterator[DeadEntry]:
        yield from (entry for entry in self._all(queue, scan_max) if _message_id(entry.data) in message_ids)

    def take(self, entry: DeadEntry) -> bool:
        return self._walk_to(entry, None)

    def move(self, entry: DeadEntry, message: Message) -> bool:
        return self._walk_to(entry, message)

    def _walk_to(self, entry: DeadEntry, message: Message | None) -> bool:
        """Find the entry (one walk each: moving thousands at once is slow, not wrong), publish
        ``message`` if any, then acknowledge the entry."""
        with self._channel() as channel:
            try:
                while True:
                    method, _, body = channel.basic_get(xq_name(entry.queue), auto_ack=False)
                    if method is None:
                        return False
                    if _member(body) == entry.member:
                        break
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == 404:
                    return False
                raise
            if message is not None:  # its queue exists: dramatiq declares a queue with its .XQ
                channel.confirm_delivery()
                channel.basic_publish(  # raises unless RabbitMQ confirms it: the entry goes back
                    exchange="", routing_key=message.queue_name, body=message.encode(),
                    properties=pika.BasicProperties(delivery_mode=2), mandatory=True,
                )
            channel.basic_ack(method.delivery_tag)
            return True


def _member(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def _dead_ms(properties: Any) -> float:
    headers = properties.headers or {}
    deaths = headers.get("x-death") or []
    moment = deaths[0].get("time") if deaths else None  # the latest death comes first
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return aware.timestamp() * 1000
    return float(moment) * 1000 if moment is not None else 0.0  # unknown: the oldest


def _close_connection(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001, S110 — already closed by the broker
        pass
