"""Hands committed inbox rows to the workers, and steps aside while Redis is down.

The rows are already durable when this runs, so a failure here loses nothing: the inbox sweeper
enqueues every row still ``received`` after ``inbox_sweep_after_s``. While Redis is down, trying
each request again would only add connect timeouts to the answers, so after a failure enqueuing
pauses for ``pause_s`` seconds.

A group-commit batch becomes one ``apply_callbacks`` message per ``batch_max`` rows (the workers
apply a message's rows in one transaction: ``money.payment_batch``), all sent in one Redis
pipeline (``workers.broker.enqueue_many``).
"""

from __future__ import annotations

import threading
import time

import dramatiq
import structlog

from workers.broker import enqueue_many
from workers.messages import apply_callbacks_messages

log = structlog.get_logger("fleetpay.ingest")


class Enqueuer:
    def __init__(self, broker: dramatiq.Broker, *, queue_name: str, batch_max: int = 100, pause_s: float = 5.0) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.batch_max = batch_max
        self.pause_s = pause_s
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def __call__(self, inbox_ids: list[int]) -> None:
        if time.monotonic() < self._paused_until:
            return
        try:
            enqueue_many(self.broker, apply_callbacks_messages(inbox_ids, queue_name=self.queue_name,
                                                               batch_max=self.batch_max))
        except Exception:
            with self._lock:
                self._paused_until = time.monotonic() + self.pause_s
            log.warning("enqueue_paused", pause_s=self.pause_s)
            raise
