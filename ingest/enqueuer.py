"""Hands committed inbox rows to the workers, and steps aside while Redis is down.

The row is already durable when this runs, so a failure here loses nothing: the inbox sweeper
enqueues every row still ``received`` after ``inbox_sweep_after_s``. While Redis is down, trying
each request again would only add connect timeouts to the answers, so after a failure enqueuing
pauses for ``pause_s`` seconds.
"""

from __future__ import annotations

import threading
import time

import structlog
from dramatiq import Broker

from workers.messages import process_callback_message

log = structlog.get_logger("fleetpay.ingest")


class Enqueuer:
    def __init__(self, broker: Broker, *, queue_name: str, pause_s: float = 5.0) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.pause_s = pause_s
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def __call__(self, inbox_ids: list[int]) -> None:
        if time.monotonic() < self._paused_until:
            return
        try:
            for inbox_id in inbox_ids:
                self.broker.enqueue(process_callback_message(inbox_id, queue_name=self.queue_name))
        except Exception:
            with self._lock:
                self._paused_until = time.monotonic() + self.pause_s
            log.warning("enqueue_paused", pause_s=self.pause_s)
            raise
