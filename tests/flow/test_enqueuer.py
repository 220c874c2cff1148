"""The ingest's batched enqueue stores each message as dramatiq's own ``enqueue`` does, and steps
aside while Redis is down."""

from __future__ import annotations

import pytest
import redis
from dramatiq import Broker, Message, Middleware
from dramatiq.broker import MessageProxy

from fleetpay.settings import Settings
from ingest.enqueuer import Enqueuer
from workers.broker import build_broker, queue_depths
from workers.messages import APPLY_CALLBACKS, PROCESS_CALLBACK, process_callback_message


class EnqueueHooks(Middleware):
    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def before_enqueue(self, broker: Broker, message: Message, delay: int | None) -> None:
        self.before.append(message.options["redis_message_id"])

    def after_enqueue(self, broker: Broker, message: Message, delay: int | None) -> None:
        self.after.append(message.options["redis_message_id"])


def test_a_batch_is_stored_as_dramatiq_stores_one_message(settings: Settings, unique: str) -> None:
    broker = build_broker(settings)
    hooks = EnqueueHooks()
    broker.add_middleware(hooks)
    queue = f"test_enqueuer_{unique}"
    Enqueuer(broker, queue_name=queue, batch_max=2)([7, 8, 9])  # a group-commit batch: two messages
    broker.enqueue(process_callback_message(10, queue_name=queue))
    broker.enqueue(process_callback_message(11, queue_name=queue))
    assert queue_depths(broker, [queue]) == {queue: {"ready": 4, "delayed": 0, "dead": 0}}

    consumer = broker.consume(queue, prefetch=4, timeout=1000)
    received: list[MessageProxy] = []
    try:
        for _ in range(4):
            message = next(consumer)
            assert message is not None, f"only {len(received)} messages were queued"
            consumer.ack(message)
            received.append(message)
    finally:
        consumer.close()
        broker.flush(queue)
    assert [(m.queue_name, m.actor_name, list(m.args), m.kwargs) for m in received] == [
        (queue, APPLY_CALLBACKS, [[7, 8]], {}), (queue, APPLY_CALLBACKS, [[9]], {}),
        (queue, PROCESS_CALLBACK, [10], {}), (queue, PROCESS_CALLBACK, [11], {}),
    ]
    assert len({m.options["redis_message_id"] for m in received}) == 4
    assert {frozenset(m.options) for m in received} == {frozenset({"redis_message_id"})}
    redis_ids = [m.options["redis_message_id"] for m in received]
    assert hooks.before == hooks.after == redis_ids


def test_redis_down_pauses_enqueuing(settings: Settings) -> None:
    broker = build_broker(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    enqueuer = Enqueuer(broker, queue_name="test_enqueuer_down", pause_s=60)
    with pytest.raises(redis.ConnectionError):
        enqueuer([1, 2])
    enqueuer([3])  # paused: no new attempt, no error
