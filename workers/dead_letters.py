"""The dead-letter queue: messages dramatiq gave up on, for operators to read, requeue or purge.

Where each broker keeps them is ``workers.broker``'s business (``RedisDeadSets``,
``RabbitDeadQueues``); this module is the same on both. Both keep them 30 days.

What is recorded, exactly: the broker keeps the message *as it was last enqueued*; the options the
``Retries`` middleware sets on the final failure never reach the broker. So ``retries`` is the number
of retries made (0: it failed on its only attempt), and the message's own ``traceback`` /
``requeue_timestamp`` are those of the last failure that was *retried*. The final error and its
traceback are kept beside it by ``workers.failures.FailureRecorder``; ``last_error`` and
``traceback`` show that record (``final_error: true``), falling back on the message's own only for a
dead letter from before it existed.

Times: ``enqueued_at`` (the message's own timestamp) and ``dead_lettered_at`` (the final failure)
always exist. dramatiq overwrites the failure time on each retry, so ``first_failed_at`` is exact
only when ``retries <= 1`` and ``None`` otherwise (it then lies after ``enqueued_at``).

Ids: operators name a dead letter by dramatiq's ``message_id``, the id the worker logs print. It is
stable across retries and across a requeue; the broker's own name for the entry is an internal detail.

Requeue: the broker removes the entry atomically and returns it, so of two operators
requeuing the same id only one gets it, and it is enqueued once; the copy goes back on its queue
with ``retries``, ``traceback`` and the delay options removed (the message id and the sender's
options are kept). Every actor is idempotent by the key its docstring names, so a requeued message
never applies anything twice.

Limits: a read examines at most ``SCAN_MAX`` entries per queue and returns at most
``LIST_LIMIT_MAX``; older entries past the scan bound are reachable by purging newer ones first.
"""
from __future__ import annotations

import builtins
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq import Message
from dramatiq.common import q_name
from dramatiq.errors import DecodeError

from fleetpay.settings import Settings
from workers import failures
from workers.broker import (
    NAMESPACE,
    DeadEntry,
    close,
    dead_store,
    queue_depths,
    redis_client,
)

log = structlog.get_logger("fleetpay.dlq")

LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 10_000  # also the most one requeue --all / purge --older-than moves
SCAN_MAX = 100_000  # dead entries examined per queue by one read
LAST_ERROR_MAX_CHARS = 300
LOCK_TIMEOUT_S = 300  # a RabbitMQ read or move holds the dead letters at most this long
LOCK_WAIT_S = 60

# Options a requeue drops: the failure record (Retries) and the delay and Redis bookkeeping the
# broker sets again when it enqueues.
RESET_OPTIONS = frozenset({"retries", "traceback", "requeue_timestamp", "eta", "redis_message_id"})

DURATION_PATTERN = re.compile(r"(\d{1,6})([smhdw])")
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class DeadLetterError(Exception):
    """A request about dead letters that cannot be answered; the message says why."""


class InvalidId(DeadLetterError, ValueError):
    def __init__(self, raw: str) -> None:
        super().__init__(f"{raw!r} is not a message id (a UUID such as 3f2b8c1e-0d4a-4b7e-9c55-1a2b3c4d5e6f)")
        self.raw = raw


class DeadLettersBusy(DeadLetterError):
    def __init__(self) -> None:
        super().__init__(f"another dead-letter command has been running for over {LOCK_WAIT_S} s: try again when it has finished")


class DeadLetterNotFound(DeadLetterError, LookupError):
    def __init__(self, message_ids: Sequence[str]) -> None:
        listed = ", ".join(message_ids)
        super().__init__(
            f"no dead letter {listed} (requeued, purged, expired after the retention, or never dead-lettered)"
        )
        self.message_ids = list(message_ids)


def parse_message_id(raw: str) -> str:
    """The canonical form of a message id, or ``InvalidId``."""
    try:
        return str(uuid.UUID(raw.strip()))
    except (ValueError, AttributeError) as error:
        raise InvalidId(str(raw)) from error


def parse_duration(raw: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` or combined ``1d12h``; ``ValueError`` otherwise."""
    text = raw.strip().lower()
    parts = DURATION_PATTERN.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{raw!r} is not a duration (e.g. 30m, 12h, 7d, 2w)")
    return timedelta(seconds=sum(int(number) * DURATION_UNITS_S[unit] for number, unit in parts))


def _utc_from_ms(ms: float | int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(float(ms) / 1000, tz=timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead set: a message and what dramatiq recorded of its failures."""

    message: Message[Any]
    queue: str  # the canonical queue whose dead set holds it
    entry: DeadEntry  # as the broker keeps it (internal)
    dead_lettered_at: datetime
    # The final failure as ``workers.failures`` recorded it (None for an older dead letter).
    failure: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.message.message_id

    @property
    def actor(self) -> str:
        return self.message.actor_name

    @property
    def retries(self) -> int:
        return int(self.message.options.get("retries", 0))

    @property
    def traceback(self) -> str | None:
        if self.failure:
            return self.failure["traceback"]
        return self.message.options.get("traceback")

    @property
    def enqueued_at(self) -> datetime:
        return _utc_from_ms(self.message.message_timestamp)  # type: ignore[return-value]

    @property
    def first_failed_at(self) -> datetime | None:
        """Exact when it was retried at most once; ``None`` when dramatiq overwrote it."""
        if self.retries == 0:
            return self.dead_lettered_at
        if self.retries == 1:
            return _utc_from_ms(self.message.options.get("requeue_timestamp"))
        return None

    @property
    def last_error(self) -> str | None:
        """The final error (``ExceptionType: message``); for a dead letter older than the failure
        record, that of the last retried failure (None when it was never retried)."""
        if self.failure:
            return self.failure["error"]
        # The exception's own line: the first unindented line after the last traceback header
        # (drivers and SQLAlchemy add context lines after it).
        lines = (self.traceback or "").splitlines()
        headers = [n for n, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
        after = lines[headers[-1] + 1 :] if headers else lines
        found = next((line for line in after if line.strip() and not line[0].isspace()), None)
        return found.strip()[:LAST_ERROR_MAX_CHARS] if found else None

    @property
    def reference(self) -> str | None:
        """``inbox:<id>`` or ``payout:<id>``: the row the actor works on, from its first argument."""
        return failures.message_reference(self.actor, self.message.args, self.message.kwargs)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actor": self.actor,
            "queue": self.queue,
            "reference": self.reference,
            "retries": self.retries,
            "last_error": self.last_error,
            "final_error": self.failure is not None,
            "enqueued_at": _iso(self.enqueued_at),
            "first_failed_at": _iso(self.first_failed_at),
            "dead_lettered_at": _iso(self.dead_lettered_at),
        }

    def document(self) -> dict[str, Any]:
        """Everything: the summary, the full message as dramatiq stored it, the traceback."""
        return {**self.summary(), "traceback": self.traceback, "message": self.message.asdict()}


@dataclass(frozen=True)
class Moved:
    """What a requeue or a purge did: ``done`` ids, and ``gone`` ids another caller took first."""

    done: list[str]
    gone: list[str]


class DeadLetters:
    """dramatiq's dead letters of some queues, on one broker (Redis or RabbitMQ).

    Parameters:
      broker: the broker; requeues go back on its queues (through its ``enqueue`` on Redis,
        published with a confirm on RabbitMQ).
      shared: the shared Redis, where ``workers.failures`` keeps each failure's record.
      queues: the queues whose dead letters are read by default (canonical names; ``.DQ`` and
        ``.XQ`` suffixes are dropped).
    """

    def __init__(self, broker: dramatiq.Broker, *, shared: redis.Redis, queues: Iterable[str]) -> None:
        self.broker = broker
        self.store = dead_store(broker)
        self.shared = shared
        self.queues = tuple(dict.fromkeys(q_name(queue) for queue in queues))
        assert self.queues, "at least one queue"

    @classmethod
    def from_settings(cls, settings: Settings, broker: dramatiq.Broker, shared: redis.Redis | None = None) -> DeadLetters:
        """The queues of ``settings`` and any other queue ``broker`` has declared."""
        declared = sorted(q_name(queue) for queue in broker.get_declared_queues())
        return cls(broker, shared=shared or redis_client(settings),
                   queues=[settings.queue_name, settings.payout_queue_name, settings.notice_queue_name, *declared])

    def _queues(self, queue: str | None) -> tuple[str, ...]:
        if queue is None:
            return self.queues
        if not queue.strip():
            raise DeadLetterError("the queue name is empty")
        return (q_name(queue.strip()),)

    # --- reads ----------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of the broker's and Redis's connections (a command or a page is done)."""
        close(self.broker)
        self.shared.close()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One read or move at a time where the broker's reads hide entries (RabbitMQ): otherwise
        a move could find its entry held by a read and report it taken by someone else."""
        if not self.store.exclusive:
            yield
            return
        lock = self.shared.lock(f"{NAMESPACE}:dlq:exclusive", timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_WAIT_S,
                                raise_on_release_error=False)  # what was done stays done
        if not lock.acquire():
            raise DeadLettersBusy()
        try:
            yield
        finally:
            lock.release()

    def depths(self) -> dict[str, dict[str, int]]:
        """Each queue's messages: ``ready``, ``delayed`` (a retry waiting out its backoff), ``dead``."""
        return queue_depths(self.broker, self.queues)

    def depth(self) -> dict[str, int]:
        """How many dead letters each queue holds."""
        return {queue: counts["dead"] for queue, counts in self.depths().items()}

    def list(
        self,
        *,
        queue: str | None = None,
        actor: str | None = None,
        older_than: timedelta | None = None,
        limit: int = LIST_LIMIT_DEFAULT,
    ) -> list[DeadLetter]:
        """Dead letters, newest first: of one queue or all, of one actor or all, only those
        dead-lettered more than ``older_than`` ago; at most ``limit``."""
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise DeadLetterError(f"the limit is between 1 and {LIST_LIMIT_MAX}")
        before_ms = None if older_than is None else (time.time() - older_than.total_seconds()) * 1000
        found: list[DeadLetter] = []
        with self._exclusive():
            for name in self._queues(queue):
                matched = 0
                for entry in self.store.newest(name, before_ms=before_ms, scan_max=SCAN_MAX):
                    letter = self._decode(entry)
                    if letter is not None and (actor is None or letter.actor == actor):
                        found.append(letter)
                        matched += 1
                        if matched == limit:
                            break
        found.sort(key=lambda letter: letter.dead_lettered_at, reverse=True)
        return self._with_failures(found[:limit])

    def _with_failures(self, letters: builtins.list[DeadLetter]) -> builtins.list[DeadLetter]:
        recorded = failures.failures(self.shared, NAMESPACE, [letter.id for letter in letters])
        return [replace(letter, failure=recorded.get(letter.id)) for letter in letters]

    def _decode(self, entry: DeadEntry) -> DeadLetter | None:
        try:
            message = Message.decode(entry.data)
        except DecodeError:
            log.warning("dead_letter_undecodable", queue=entry.queue, member=entry.member)
            return None
        return DeadLetter(message, entry.queue, entry, _utc_from_ms(entry.dead_ms))  # type: ignore[arg-type]

    def get(self, message_id: str) -> DeadLetter:
        """The newest dead entry of this message; ``InvalidId`` or ``DeadLetterNotFound``."""
        return self.find([message_id])[0]

    def find(self, message_ids: Sequence[str]) -> builtins.list[DeadLetter]:
        """Every dead entry of these messages (normally one each), newest first, in the order
        asked; ``DeadLetterNotFound`` naming all the missing ones if any is missing."""
        wanted = list(dict.fromkeys(parse_message_id(raw) for raw in message_ids))
        if not wanted:
            raise DeadLetterError("no message ids given")
        by_id: dict[str, dict[tuple[str, str], DeadLetter]] = {message_id: {} for message_id in wanted}
        with self._exclusive():
            for queue in self.queues:
                for entry in self.store.matching(queue, set(by_id), scan_max=SCAN_MAX):
                    letter = self._decode(entry)
                    if letter is not None and letter.id in by_id:
                        # a scan may return an entry twice; key by (queue, member).
                        by_id[letter.id][(queue, entry.member)] = letter
        missing = [message_id for message_id, letters in by_id.items() if not letters]
        if missing:
            raise DeadLetterNotFound(missing)
        return self._with_failures([
            letter
            for letters in by_id.values()
            for letter in sorted(letters.values(), key=lambda item: item.dead_lettered_at, reverse=True)
        ])

    def select(
        self,
        *,
        ids: Sequence[str] | None,
        wide: bool,
        wide_name: str,
        older_than: timedelta | None = None,
        actor: str | None = None,
        queue: str | None = None,
    ) -> builtins.list[DeadLetter]:
        """The dead letters a requeue or purge names (the CLI and ``/admin`` both ask here): either
        ``ids``, or a wide selection (``wide``: every one, or those older than ``older_than``),
        which alone may be narrowed to one ``actor`` or ``queue``. ``wide_name`` is how the caller
        spells the wide selection (``--all``, ``older_than``) in the error it gets."""
        if bool(ids) == wide:
            raise DeadLetterError(f"give message ids or {wide_name} (one of them)")
        if (actor or queue) and not wide:
            raise DeadLetterError(f"actor and queue go with {wide_name}")
        if ids:
            if len(ids) > LIST_LIMIT_MAX:
                raise DeadLetterError(f"at most {LIST_LIMIT_MAX} ids at a time")
            return self.find(ids)
        return self.list(queue=queue, actor=actor, older_than=older_than, limit=LIST_LIMIT_MAX)

    # --- writes ---------------------------------------------------------------------------

    def requeue(self, letters: Iterable[DeadLetter]) -> Moved:
        """Put these dead letters back on their queues, with their failure record reset. An entry
        another caller requeued or purged meanwhile is reported ``gone`` and not enqueued; an entry
        leaves the dead letters only once its message is back on its queue."""
        done: list[str] = []
        gone: list[str] = []
        for letter in letters:
            with self._exclusive():
                if letter.id in done:  # a second dead entry of the same message: drop it, send once
                    self.store.take(letter.entry)
                    continue
                if not self.store.move(letter.entry, self._fresh(letter)):
                    gone.append(letter.id)
                    continue
            failures.forget(self.shared, NAMESPACE, message_id=letter.id, reference=letter.reference,
                            keep_failing_ms=failures.REQUEUE_GRACE_MS)
            log.info("dead_letter_requeued", message_id=letter.id, actor=letter.actor, queue=letter.queue,
                     reference=letter.reference, retries=letter.retries)
            done.append(letter.id)
        return Moved(done=done, gone=[message_id for message_id in gone if message_id not in done])

    @staticmethod
    def _fresh(letter: DeadLetter) -> Message[Any]:
        """The message as its sender made it, with the failure record and the delay reset."""
        message = letter.message
        options = {key: value for key, value in message.options.items() if key not in RESET_OPTIONS}
        options["dlq_requeues"] = int(options.get("dlq_requeues", 0)) + 1
        return Message(queue_name=letter.queue, actor_name=message.actor_name, args=message.args,
                       kwargs=message.kwargs, options=options, message_id=message.message_id,
                       message_timestamp=message.message_timestamp)

    def purge(self, letters: Iterable[DeadLetter]) -> Moved:
        """Delete these dead letters for good."""
        done: list[str] = []
        gone: list[str] = []
        for letter in letters:
            with self._exclusive():
                taken = self.store.take(letter.entry)
            if not taken:
                gone.append(letter.id)
                continue
            failures.forget(self.shared, NAMESPACE, message_id=letter.id, reference=letter.reference,
                            keep_failing_ms=None)
            log.info("dead_letter_purged", message_id=letter.id, actor=letter.actor, queue=letter.queue,
                     reference=letter.reference)
            if letter.id not in done:
                done.append(letter.id)
        return Moved(done=done, gone=[message_id for message_id in gone if message_id not in done])
