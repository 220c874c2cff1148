"""Hands committed inbox rows to the workers, and steps aside while Redis is down.

The row is already durable when this runs, so a failure here loses nothing: the inbox sweeper
enqueues every row still ``received`` after ``inbox_sweep_after_s``. While Redis is down, trying
each request again would only add connect timeouts to the answers, so after a failure enqueuing
pauses for ``pause_s`` seconds.

A batch's messages go to Redis in one pipeline. Each is stored exactly as ``RedisBroker.enqueue``
stores it: a copy with its own ``redis_message_id``, dramatiq's ``dispatch`` script with the
``enqueue`` command, and the broker's ``enqueue`` middleware hooks around it.
"""

from __future__ import annotations

import threading
import time
from uuid import uuid4

import structlog
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from workers.messages import process_callback_message

log = structlog.get_logger("fleetpay.ingest")


class Enqueuer:
    def __init__(self, broker: RedisBroker, *, queue_name: str, pause_s: float = 5.0) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.pause_s = pause_s
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def __call__(self, inbox_ids: list[int]) -> None:
        if time.monotonic() < self._paused_until:
            return
        try:
            self._enqueue_all([process_callback_message(i, queue_name=self.queue_name) for i in inbox_ids])
        except Exception:
            with self._lock:
                self._paused_until = time.monotonic() + self.pause_s
            log.warning("enqueue_paused", pause_s=self.pause_s)
            raise

    def _enqueue_all(self, messages: list[Message]) -> None:
        """``RedisBroker.enqueue`` (without delay) for each message, in one pipeline: two round
        trips for the batch (redis-py first checks that the script is loaded), not one a message."""
        broker = self.broker
        # Unique per enqueue, as dramatiq makes it: a message may be enqueued again by the sweeper.
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
