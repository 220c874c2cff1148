"""The broker chosen by URL, on a real RabbitMQ node of the tests' own (``tests.rabbitmq_node``):
publisher-confirmed messages survive a broker restart; dead letters made by dramatiq's own retry
path are listed, shown, requeued (once, of two operators) and purged by the same code and the same
``fleetpay dlq`` commands as on Redis; the ingest and a worker run the README's flow on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import dramatiq
import httpx
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import select

from db.models import Inbox, Posting
from fleetpay.settings import Settings
from launcher import rabbitmq_node
from tests.support import (
    ADMIN_TOKEN,
    TOKEN,
    add_driver_with_vehicle,
    c2b_body,
    fleetpay,
    fleetpay_argv,
    free_port,
    serve,
    wait_until,
)
from workers.broker import DEAD_MESSAGE_TTL_MS, build_broker, close, enqueue_many, queue_depths, reachable
from workers.dead_letters import DeadLetters
from workers.messages import apply_callbacks_messages

pytestmark = pytest.mark.skipif(not rabbitmq_node.available(), reason=rabbitmq_node.MISSING)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbitmq_node.RabbitNode]:
    node = rabbitmq_node.RabbitNode(tmp_path_factory.mktemp("rabbitmq")).start()
    yield node
    node.stop()


@pytest.fixture
def amqp_settings(rabbit: rabbitmq_node.RabbitNode, redis_url: str) -> Settings:
    """Settings on a virtual host of this test's own: its queues are nobody else's."""
    url = rabbit.add_vhost(f"t{uuid.uuid4().hex[:8]}")
    return Settings(broker_url=url, redis_url=redis_url, queue_name=f"q{uuid.uuid4().hex[:6]}")


def test_the_url_chooses_the_broker(amqp_settings: Settings) -> None:
    broker = build_broker(amqp_settings)
    try:
        assert isinstance(broker, RabbitmqBroker) and broker.confirm_delivery
        assert reachable(broker)
    finally:
        close(broker)
    assert not reachable(build_broker(amqp_settings.model_copy(update={"broker_url": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"})))


def test_confirmed_messages_survive_a_broker_restart(rabbit: rabbitmq_node.RabbitNode, amqp_settings: Settings) -> None:
    broker = build_broker(amqp_settings)
    messages = apply_callbacks_messages(list(range(1, 251)), queue_name=amqp_settings.queue_name, batch_max=100)
    enqueue_many(broker, messages)
    close(broker)
    rabbit.restart(down_s=0.5)
    broker = build_broker(amqp_settings)
    try:
        ready, delayed, dead = broker.get_queue_message_counts(amqp_settings.queue_name)
        assert (ready, delayed, dead) == (3, 0, 0)  # 100 + 100 + 50 ids
        assert queue_depths(broker, [amqp_settings.queue_name, "never_declared"]) == {
            amqp_settings.queue_name: {"ready": 3, "delayed": 0, "dead": 0},
            "never_declared": {"ready": 0, "delayed": 0, "dead": 0},
        }
    finally:
        close(broker)


def test_dead_letters_are_kept_thirty_days_on_a_classic_queue(amqp_settings: Settings) -> None:
    """``.XQ`` is declared with dramatiq's module TTL, which ``workers.broker`` sets, and always as a
    classic queue, even on a quorum vhost (no public way for either): RabbitMQ accepts a second
    declaration only with the same arguments."""
    broker = build_broker(amqp_settings)
    try:
        broker.declare_queue(amqp_settings.queue_name, ensure=True)
        connection = pika.BlockingConnection(broker.parameters)
        connection.channel().queue_declare(f"{amqp_settings.queue_name}.XQ", durable=True,
                                           arguments={"x-message-ttl": DEAD_MESSAGE_TTL_MS, "x-queue-type": "classic"})
        connection.close()
    finally:
        close(broker)


def make_dead_letters(settings: Settings, count: int) -> list[str]:
    """``count`` messages of an actor that always fails, through dramatiq's own retry and dead-letter
    path on RabbitMQ; their message ids."""
    broker = build_broker(settings)
    name = f"always_fails_{uuid.uuid4().hex[:6]}"

    def always_fails(n: int) -> None:
        raise RuntimeError(f"refused on purpose ({n})")

    actor = dramatiq.actor(always_fails, actor_name=name, broker=broker, queue_name=settings.queue_name,
                           max_retries=1, min_backoff=10, max_backoff=20)
    sent = [actor.send(n).message_id for n in range(count)]
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: broker.get_queue_message_counts(settings.queue_name)[2] == count, timeout_s=60,
                   what=f"{count} dead letters")
    finally:
        worker.stop()
        close(broker)
    return sent


def test_dead_letters_are_listed_shown_requeued_and_purged(amqp_settings: Settings) -> None:
    sent = make_dead_letters(amqp_settings, 4)
    broker = build_broker(amqp_settings)
    try:
        letters = DeadLetters.from_settings(amqp_settings, broker)
        assert letters.depth()[amqp_settings.queue_name] == 4
        listed = letters.list()
        assert sorted(letter.id for letter in listed) == sorted(sent)
        assert all(letter.retries == 1 and letter.queue == amqp_settings.queue_name for letter in listed)
        assert all(abs(letter.dead_lettered_at.timestamp() - time.time()) < 120 for letter in listed)
        shown = letters.get(sent[0])
        assert shown.id == sent[0] and tuple(shown.message.args) == (0,)
        assert letters.list(older_than=timedelta(hours=1)) == []
        # A read takes nothing: the same four are still there.
        assert letters.depth()[amqp_settings.queue_name] == 4

        moved = letters.requeue(letters.find([sent[0]]))
        assert moved.done == [sent[0]] and moved.gone == []
        ready, _, dead = broker.get_queue_message_counts(amqp_settings.queue_name)
        assert (ready, dead) == (1, 3)
        purged = letters.purge(letters.find([sent[1]]))
        assert purged.done == [sent[1]]
        assert sorted(letter.id for letter in letters.list()) == sorted(sent[2:])
    finally:
        close(broker)


def test_two_operators_requeuing_the_same_letter_enqueue_it_once(amqp_settings: Settings) -> None:
    [sent] = make_dead_letters(amqp_settings, 1)
    brokers = [build_broker(amqp_settings) for _ in range(2)]
    try:
        operators = [DeadLetters.from_settings(amqp_settings, broker) for broker in brokers]
        found = [operator.find([sent]) for operator in operators]
        with ThreadPoolExecutor(2) as pool:
            moves = list(pool.map(lambda pair: pair[0].requeue(pair[1]), zip(operators, found, strict=True)))
        assert sorted(len(move.done) for move in moves) == [0, 1]
        ready, _, dead = brokers[0].get_queue_message_counts(amqp_settings.queue_name)
        assert (ready, dead) == (1, 0)
    finally:
        for broker in brokers:
            close(broker)


def test_a_requeue_that_cannot_publish_leaves_the_dead_letter_where_it_was(amqp_settings: Settings) -> None:
    """The entry is acknowledged only once RabbitMQ confirms its message back on its queue: with the
    queue gone (unroutable), the requeue fails and the dead letter is still there."""
    [sent] = make_dead_letters(amqp_settings, 1)
    broker = build_broker(amqp_settings)
    try:
        letters = DeadLetters.from_settings(amqp_settings, broker)
        connection = pika.BlockingConnection(broker.parameters)
        connection.channel().queue_delete(amqp_settings.queue_name)
        connection.close()
        with pytest.raises(pika.exceptions.UnroutableError):
            letters.requeue(letters.find([sent]))
        assert [letter.id for letter in letters.list()] == [sent]
    finally:
        close(broker)


def test_reads_while_requeuing_never_make_a_letter_look_taken(amqp_settings: Settings) -> None:
    """A read holds every entry while it runs; the dead-letter lock keeps moves from missing them."""
    sent = make_dead_letters(amqp_settings, 6)
    brokers = [build_broker(amqp_settings) for _ in range(2)]
    try:
        reader, mover = (DeadLetters.from_settings(amqp_settings, broker) for broker in brokers)
        letters = mover.find(sent)
        with ThreadPoolExecutor(2) as pool:
            reads = pool.submit(lambda: [len(reader.list()) for _ in range(10)])
            moved = mover.requeue(letters)
            reads.result()
        assert sorted(moved.done) == sorted(sent) and moved.gone == []
        assert mover.depths()[amqp_settings.queue_name] == {"ready": 6, "delayed": 0, "dead": 0}
    finally:
        for broker in brokers:
            close(broker)


def test_the_admin_api_and_metrics_on_rabbitmq(amqp_settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    """``/admin/dlq…``, ``/readyz`` and the broker's gauges on ``/metrics`` from an ingest whose
    broker is RabbitMQ."""
    from ingest.app import build_app

    sent = make_dead_letters(amqp_settings, 2)
    token = amqp_settings.admin_token.get_secret_value()
    broker = build_broker(amqp_settings)
    try:
        with serve(build_app(amqp_settings, engine=engine, broker=broker)) as url:
            assert httpx.get(f"{url}/readyz").json()["checks"]["rabbitmq"] is True
            with httpx.Client(base_url=f"{url}/admin", headers={"Authorization": f"Bearer {token}"}, timeout=30) as admin:
                listed = admin.get("/dlq").json()
                assert sorted(letter["id"] for letter in listed["dead_letters"]) == sorted(sent)
                assert listed["depth"][amqp_settings.queue_name] == 2
                assert admin.get(f"/dlq/{sent[0]}").json()["id"] == sent[0]
                assert admin.post("/dlq/requeue", json={"ids": [sent[0]]}).json() == {"requeued": [sent[0]]}
                assert admin.post("/dlq/purge", json={"ids": [sent[1]]}).json() == {"purged": [sent[1]]}
            scraped = httpx.get(f"{url}/metrics").text
            queue = amqp_settings.queue_name
            assert f'fleetpay_dlq_depth{{queue="{queue}"}} 0.0' in scraped
            assert f'fleetpay_queue_messages{{queue="{queue}",state="ready"}} 1.0' in scraped
    finally:
        close(broker)


def test_fleetpay_dlq_commands_on_rabbitmq(amqp_settings: Settings, database_url: str) -> None:
    sent = make_dead_letters(amqp_settings, 2)
    env = {**os.environ, "FLEETPAY_LOG_JSON": "false", "FLEETPAY_BROKER_URL": amqp_settings.broker_url or "",
           "FLEETPAY_QUEUE_NAME": amqp_settings.queue_name, "FLEETPAY_DATABASE_URL": database_url}
    listed = json.loads(fleetpay("dlq", "list", "--json", env=env).stdout)
    assert sorted(item["id"] for item in listed["dead_letters"]) == sorted(sent)
    shown = json.loads(fleetpay("dlq", "show", sent[0], "--json", env=env).stdout)
    assert shown["id"] == sent[0] and "refused on purpose" in (shown["traceback"] or shown["last_error"] or "")
    fleetpay("dlq", "purge", sent[1], "--yes", env=env)
    listed = json.loads(fleetpay("dlq", "list", "--json", env=env).stdout)
    assert [item["id"] for item in listed["dead_letters"]] == [sent[0]]


def test_ingest_and_worker_apply_callbacks_through_rabbitmq(amqp_settings: Settings, fresh_sessions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The README's flow with ``FLEETPAY_BROKER_URL=amqp://…``: callbacks acknowledged by the
    ingest are applied by a worker that reads only RabbitMQ (a database of the test's own)."""
    database_url = fresh_sessions.kw["bind"].url.render_as_string(hide_password=False)
    with fresh_sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code="D100", msisdn="254722000111")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLEETPAY_")} | {
        "FLEETPAY_DATABASE_URL": database_url, "FLEETPAY_REDIS_URL": amqp_settings.redis_url or "",
        "FLEETPAY_BROKER_URL": amqp_settings.broker_url or "", "FLEETPAY_QUEUE_NAME": amqp_settings.queue_name,
        "FLEETPAY_CALLBACK_TOKEN": TOKEN, "FLEETPAY_ADMIN_TOKEN": ADMIN_TOKEN, "FLEETPAY_INSTANT_PAYOUTS": "false",
    }
    log = (tmp_path / "processes.log").open("ab")
    processes = [subprocess.Popen(fleetpay_argv(*args), env=env, stdout=log, stderr=log, start_new_session=True)
                 for args in (("ingest", "--host", "127.0.0.1", "--port", str(port)),
                              ("worker", "--processes", "1", "--threads", "2", "--queues", amqp_settings.queue_name))]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{base}/readyz"), timeout_s=60, what="the ingest")
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["checks"] == {"postgres": True, "redis": True, "rabbitmq": True}
        receipts = [f"RB{n:08d}" for n in range(20)]
        for receipt in receipts:
            answer = httpx.post(f"{base}/cb/{TOKEN}/c2b/confirm", json=c2b_body(receipt, "100.00", vehicle))
            assert answer.status_code == 200, answer.text

        def applied() -> int:
            with fresh_sessions() as session:
                return len(session.scalars(select(Posting.idempotency_key).where(
                    Posting.idempotency_key.in_([f"c2b:{receipt}" for receipt in receipts]))).all())

        wait_until(lambda: applied() == len(receipts), timeout_s=60, what="the callbacks applied")
        with fresh_sessions() as session:
            assert set(session.scalars(select(Inbox.status)).all()) == {"processed"}
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        log.close()
    # Nothing else consumed these messages: the vhost's queue is empty, nothing is dead.
    broker = build_broker(amqp_settings)
    try:
        assert broker.get_queue_message_counts(amqp_settings.queue_name) == (0, 0, 0)
    finally:
        close(broker)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
