"""What became of a message that failed, kept in Redis beside dramatiq's own record.

dramatiq's dead letter keeps the message *as it was last enqueued* (``workers.dead_letters``): the
final error and traceback never reach Redis. ``FailureRecorder`` (a dramatiq middleware) keeps them:

- ``<ns>:failure:<message_id>``: the last error of a message (``ExceptionType: message``), its
  traceback, when, and after how many retries. Each failure overwrites it, so for a dead letter it
  is the final one. Kept for the dead letters' retention.
- ``<ns>:failing:<inbox|payout>:<id>``: the message that works on that row and is failing. While it
  waits for a retry it lasts as long as that retry's longest backoff and a grace (``retry_wait_ms``):
  if the retry is lost (a Redis flushed or restarted), the sweeps take the row back soon after;
  once dead-lettered, the retention. A success clears it. The sweeps leave such rows alone (``failing``): re-enqueuing a
  row whose message is retrying, or dead and waiting for an operator, made a second dead letter for
  one failure. Purging the dead letter clears it, so an unapplied inbox row is swept again: an
  acknowledged callback is never dropped.

Recording never breaks processing: a Redis error here is logged and ignored.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from typing import Any

import dramatiq
import redis
import structlog

from workers.messages import APPLY_CALLBACKS, CHECK_PAYOUT_STATUS, PROCESS_CALLBACK, SEND_NOTIFICATION, SEND_PAYOUT

log = structlog.get_logger("fleetpay.dlq")

ERROR_MAX_CHARS = 300
TRACEBACK_LIMIT = 30

# What the actor's first argument names, shown as e.g. ``inbox:42`` / ``payout:7``.
REFERENCE_KIND_BY_ACTOR = {
    PROCESS_CALLBACK: "inbox",
    APPLY_CALLBACKS: "inbox",  # a batch: its first argument is a list of inbox ids
    SEND_PAYOUT: "payout",
    CHECK_PAYOUT_STATUS: "payout",
    SEND_NOTIFICATION: "notification",
}
REFERENCE_KWARG_BY_KIND = {"inbox": "inbox_id", "payout": "payout_id", "notification": "notification_id"}


RETRY_GRACE_MS = 60_000  # a retry due is normally taken within this, even behind a queue
REQUEUE_GRACE_MS = 300_000  # a requeued dead letter is normally taken within this


def retry_wait_ms(retries: int, *, min_backoff_ms: int, max_backoff_ms: int) -> int:
    """The longest dramatiq waits before the retry after ``retries`` earlier ones (its backoff with
    jitter: up to twice ``min_backoff × 2^retries``, never above the maximum), and a grace."""
    return min(2 * min_backoff_ms * 2 ** min(retries, 32), max_backoff_ms) + RETRY_GRACE_MS


def message_reference(actor_name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    """``inbox:<id>`` or ``payout:<id>``: the row an actor's message works on, or None; a batch's
    rows as ``inbox:<id>,<id>,…``."""
    kind = REFERENCE_KIND_BY_ACTOR.get(actor_name)
    if kind is None:
        return None
    value = args[0] if args else kwargs.get(REFERENCE_KWARG_BY_KIND[kind])
    if isinstance(value, (list, tuple)):
        value = ",".join(str(row_id) for row_id in value) or None
    return None if value is None else f"{kind}:{value}"


def row_references(reference: str | None) -> list[str]:
    """Each row's own reference: ``inbox:7,8`` → ``inbox:7``, ``inbox:8``."""
    if not reference:
        return []
    kind, _, ids = reference.partition(":")
    return [f"{kind}:{row_id}" for row_id in ids.split(",")]


def error_line(exception: BaseException) -> str:
    """``module.ExceptionType: message``, its first line, as the traceback ends."""
    return "".join(traceback.format_exception_only(exception)).splitlines()[0][:ERROR_MAX_CHARS]


class FailureKeys:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def failure(self, message_id: str) -> str:
        return f"{self.namespace}:failure:{message_id}"

    def failing(self, reference: str) -> str:
        return f"{self.namespace}:failing:{reference}"


class FailureRecorder(dramatiq.Middleware):
    def __init__(self, client: redis.Redis, *, namespace: str, retention_ms: int) -> None:
        self.client = client
        self.keys = FailureKeys(namespace)
        self.retention_ms = retention_ms

    def after_process_message(self, broker, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
        reference = message_reference(message.actor_name, message.args, message.kwargs)
        try:
            if exception is None:
                if reference and (message.options.get("retries") or message.options.get("dlq_requeues")):
                    # it had failed before: not any more
                    release(self.client, self.keys, row_references(reference), message.message_id, keep_ms=None)
                return
            record = {
                "message_id": message.message_id,
                "actor": message.actor_name,
                "reference": reference,
                "error": error_line(exception),
                "traceback": "".join(traceback.format_exception(exception, limit=TRACEBACK_LIMIT)),
                "failed_at_ms": int(time.time() * 1000),
                "retries_before": int(message.options.get("retries", 0)),
            }
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.keys.failure(message.message_id), json.dumps(record), px=self.retention_ms)
            if reference:
                actor = broker.get_actor(message.actor_name)
                option = lambda name, default: int(message.options.get(name, actor.options.get(name, default)))  # noqa: E731
                wait_ms = retry_wait_ms(int(message.options.get("retries", 0)), min_backoff_ms=option("min_backoff", 15_000),
                                        max_backoff_ms=option("max_backoff", 604_800_000))
                for row in row_references(reference):
                    pipe.set(self.keys.failing(row), message.message_id, px=wait_ms)
            pipe.execute()
        except redis.RedisError as error:
            log.warning("failure_not_recorded", message_id=message.message_id, error=str(error))

    def after_nack(self, broker, message):  # type: ignore[no-untyped-def]
        """Dead-lettered: the row waits for an operator as long as the dead letter is kept."""
        reference = message_reference(message.actor_name, message.args, message.kwargs)
        if reference is None:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for row in row_references(reference):
                pipe.set(self.keys.failing(row), message.message_id, px=self.retention_ms)
            pipe.execute()
        except redis.RedisError as error:
            log.warning("failure_not_recorded", message_id=message.message_id, error=str(error))


def failures(client: redis.Redis, namespace: str, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The recorded last failure of each message that has one."""
    if not message_ids:
        return {}
    keys = FailureKeys(namespace)
    found = client.mget([keys.failure(message_id) for message_id in message_ids])
    return {message_id: json.loads(data) for message_id, data in zip(message_ids, found) if data}


def failing(client: redis.Redis, namespace: str, kind: str, ids: Sequence[int]) -> set[int]:
    """Which of these rows have a message retrying or dead-lettered. When Redis does not answer,
    all of them: the sweep leaves every row for its next round, rather than send a row whose
    message is failing again each round (one more dead letter each time)."""
    if not ids:
        return set()
    keys = FailureKeys(namespace)
    try:
        found = client.mget([keys.failing(f"{kind}:{row_id}") for row_id in ids])
    except redis.RedisError as error:
        log.warning("failing_rows_unknown", kind=kind, rows=len(ids), error=str(error))
        return set(ids)
    return {row_id for row_id, message_id in zip(ids, found) if message_id}


def forget(client: redis.Redis, namespace: str, *, message_id: str, reference: str | None, keep_failing_ms: int | None) -> None:
    """A dead letter left the dead set: purged (``keep_failing_ms`` None: the row is the sweep's
    again, and the record goes) or requeued (the row stays its message's for ``keep_failing_ms``)."""
    keys = FailureKeys(namespace)
    release(client, keys, row_references(reference), message_id, keep_ms=keep_failing_ms)
    if keep_failing_ms is None:
        client.delete(keys.failure(message_id))


# Only the message that holds a row lets it go: a row is named by its batch's message and, once
# handed on alone, by a message of its own; neither may release the other's hold.
_RELEASE = """
for _, key in ipairs(KEYS) do
    if redis.call('get', key) == ARGV[1] then
        if ARGV[2] == '' then redis.call('del', key) else redis.call('pexpire', key, ARGV[2]) end
    end
end
return 0
"""


def release(client: redis.Redis, keys: FailureKeys, rows: Sequence[str], message_id: str, *, keep_ms: int | None) -> None:
    """The rows ``message_id`` holds: free (``keep_ms`` None), or held ``keep_ms`` longer."""
    if rows:
        client.register_script(_RELEASE)(keys=[keys.failing(row) for row in rows],
                                         args=[message_id, "" if keep_ms is None else keep_ms])
