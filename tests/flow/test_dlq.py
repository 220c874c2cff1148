"""The dead-letter queue (docs/design.md §4, "message keeps failing"): a real ``process_callback``
message, failed through dramatiq's own retry path, is listed, shown, requeued and applied once;
purges; bad ids; the operator API with and without its token; the depth gauge on /metrics."""

from __future__ import annotations

import json
from datetime import datetime, timezone
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from db import ledger
from db.models import Driver, Inbox, Posting
from tests.support import add_driver_with_vehicle, c2b_body, fleetpay, next_driver_code, next_receipt, serve, wait_until



@pytest.fixture
def dead_letters(settings, broker):  # type: ignore[no-untyped-def]
    from workers.dead_letters import DeadLetters

    return DeadLetters.from_settings(settings, broker)


class Poison:
    """Inbox rows whose postings PostgreSQL refuses, as a real database failure would: a
    test-only trigger raises for them. The worker's own code runs unchanged."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, inbox_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(text("INSERT INTO dlq_test_poison VALUES (:i) ON CONFLICT DO NOTHING"), {"i": inbox_id})

    def discard(self, inbox_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(text("DELETE FROM dlq_test_poison WHERE inbox_id = :i"), {"i": inbox_id})


POISON_SQL = """
CREATE TABLE IF NOT EXISTS dlq_test_poison (inbox_id bigint PRIMARY KEY);
CREATE SEQUENCE IF NOT EXISTS dlq_test_attempts;
CREATE OR REPLACE FUNCTION dlq_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM dlq_test_poison WHERE inbox_id = NEW.inbox_id) THEN
        RAISE EXCEPTION 'refused for the dead-letter test (inbox %) attempt %', NEW.inbox_id, nextval('dlq_test_attempts');
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS dlq_test_refuse ON postings;
CREATE TRIGGER dlq_test_refuse BEFORE INSERT ON postings FOR EACH ROW EXECUTE FUNCTION dlq_test_refuse();
"""


@pytest.fixture
def failing(sessions: sessionmaker[Session]) -> Iterator[Poison]:
    with sessions.begin() as session:
        session.execute(text(POISON_SQL))
    yield Poison(sessions)
    with sessions.begin() as session:
        session.execute(text("DROP TRIGGER dlq_test_refuse ON postings; DROP FUNCTION dlq_test_refuse(); DROP TABLE dlq_test_poison;"
                             " DROP SEQUENCE dlq_test_attempts"))


def stored_callback(sessions: sessionmaker[Session], amount: str = "200.00") -> tuple[int, str, str]:
    """A C2B confirmation stored in the inbox as the ingest stores it, not yet enqueued:
    (inbox id, receipt, driver code)."""
    code = next_driver_code()
    receipt = next_receipt("L")
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code)
        row = Inbox(kind="c2b_confirmation", external_id=receipt, body=json.dumps(c2b_body(receipt, amount, vehicle)))
        session.add(row)
        session.flush()
        return row.id, receipt, code


def dead_letter(dead_letters, failing: Poison, inbox_id: int, *, max_retries: int = 0) -> str:  # type: ignore[no-untyped-def]
    """Send ``process_callback(inbox_id)`` with few retries while it fails: dramatiq's Retries
    middleware retries it, then fails it, and the worker nacks it into the dead set. Returns its
    message id."""
    from workers.dead_letters import DeadLetterNotFound
    from workers.process_callback import process_callback

    failing.add(inbox_id)
    message = process_callback.send_with_options(args=(inbox_id,), max_retries=max_retries)

    def is_dead() -> bool:
        try:
            return dead_letters.get(message.message_id).reference == f"inbox:{inbox_id}"
        except DeadLetterNotFound:
            return False

    wait_until(is_dead, timeout_s=15, what="the message to be dead-lettered")
    failing.discard(inbox_id)
    return message.message_id


def postings(sessions: sessionmaker[Session], receipt: str) -> int:
    with sessions() as session:
        return session.execute(select(func.count()).where(Posting.idempotency_key == f"c2b:{receipt}")).scalar_one()


def target_cents(sessions: sessionmaker[Session], code: str) -> int:
    with sessions() as session:
        driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
        return ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).target)


def inbox_status(sessions: sessionmaker[Session], inbox_id: int) -> str:
    with sessions() as session:
        return session.execute(select(Inbox.status).where(Inbox.id == inbox_id)).scalar_one()


def test_dead_letter_is_listed_shown_requeued_and_applied_once(settings, worker, sessions, dead_letters, failing) -> None:  # type: ignore[no-untyped-def]
    inbox_id, receipt, code = stored_callback(sessions, "200.00")
    message_id = dead_letter(dead_letters, failing, inbox_id, max_retries=1)
    assert inbox_status(sessions, inbox_id) == "received" and postings(sessions, receipt) == 0

    listed = json.loads(fleetpay("dlq", "list", "--json").stdout)
    [entry] = [letter for letter in listed["dead_letters"] if letter["id"] == message_id]
    assert entry["actor"] == "process_callback" and entry["queue"] == settings.queue_name
    assert entry["reference"] == f"inbox:{inbox_id}" and entry["retries"] == 1
    assert entry["last_error"].startswith("sqlalchemy.exc.")
    assert f"refused for the dead-letter test (inbox {inbox_id})" in entry["last_error"]
    assert entry["enqueued_at"] <= entry["first_failed_at"] < entry["dead_lettered_at"]  # retried once: exact
    assert listed["depth"][settings.queue_name] >= 1 and settings.payout_queue_name in listed["depth"]
    others = json.loads(fleetpay("dlq", "list", "--actor", "send_payout", "--json").stdout)
    assert message_id not in {letter["id"] for letter in others["dead_letters"]}

    shown = json.loads(fleetpay("dlq", "show", message_id, "--json").stdout)
    assert shown["message"]["args"] == [inbox_id] and shown["message"]["options"]["max_retries"] == 1
    assert "refused for the dead-letter test" in shown["traceback"]
    table = fleetpay("dlq", "show", message_id).stdout
    assert message_id in table and f"inbox:{inbox_id}" in table and "Traceback" in table

    requeued = fleetpay("dlq", "requeue", message_id)
    assert f"requeued {message_id}" in requeued.stdout
    wait_until(lambda: inbox_status(sessions, inbox_id) == "processed", timeout_s=15, what="the requeued message")
    assert postings(sessions, receipt) == 1
    assert target_cents(sessions, code) == 10_000  # KES 200 at 50 %: the balance moved once

    again = fleetpay("dlq", "requeue", message_id, check=False)
    assert again.returncode == 1 and f"no dead letter {message_id}" in again.stderr
    assert message_id not in fleetpay("dlq", "list", "--json").stdout
    assert postings(sessions, receipt) == 1


def test_one_failure_is_one_dead_letter_with_its_final_error(settings, worker, sessions, dead_letters, failing) -> None:  # type: ignore[no-untyped-def]
    """The dead letter shows the error of its *last* try (dramatiq's own record stops at the last
    retried one), and the inbox sweep leaves a row whose message is dead to it, until the dead
    letter is purged (then the row is swept again: nothing acknowledged is dropped)."""
    from workers.sweep_inbox import enqueue_stale_inbox_rows

    inbox_id, _, _ = stored_callback(sessions)
    message_id = dead_letter(dead_letters, failing, inbox_id, max_retries=2)
    with sessions() as session:
        last_attempt = session.execute(text("SELECT last_value FROM dlq_test_attempts")).scalar_one()
    shown = json.loads(fleetpay("dlq", "show", message_id, "--json").stdout)
    assert shown["retries"] == 2 and shown["final_error"] is True
    assert shown["last_error"].endswith(f"attempt {last_attempt}"), shown["last_error"]
    assert f"attempt {last_attempt}" in shown["traceback"]
    assert f"attempt {last_attempt}" not in shown["message"]["options"]["traceback"]  # dramatiq's: a retried one
    table = fleetpay("dlq", "show", message_id).stdout
    assert "traceback of the final failure" in table

    failing.add(inbox_id)  # still failing: a sweep must not make a second dead letter of it
    assert enqueue_stale_inbox_rows(sessions, settings, older_than_s=0) == 0
    failing.discard(inbox_id)
    fleetpay("dlq", "purge", message_id, "--yes")
    assert enqueue_stale_inbox_rows(sessions, settings, older_than_s=0) >= 1  # the row is the sweep's again
    wait_until(lambda: inbox_status(sessions, inbox_id) == "processed", timeout_s=15, what="the swept row")


def test_purge_by_id_and_by_age(worker, sessions, dead_letters, failing) -> None:  # type: ignore[no-untyped-def]
    from workers.dead_letters import DeadLetterNotFound

    first = dead_letter(dead_letters, failing, stored_callback(sessions)[0])
    second = dead_letter(dead_letters, failing, stored_callback(sessions)[0])
    never_retried = dead_letters.get(first)
    # Never retried: dramatiq kept no error with it, but fleetpay's failure record did; its only
    # failure is the dead-letter time.
    assert never_retried.retries == 0 and never_retried.message.options.get("traceback") is None
    assert never_retried.last_error.startswith("sqlalchemy.exc.InternalError") and never_retried.failure is not None
    assert never_retried.first_failed_at == never_retried.dead_lettered_at

    unconfirmed = fleetpay("dlq", "purge", first, check=False)  # no terminal, no --yes
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert dead_letters.get(first)

    assert f"purged {first}" in fleetpay("dlq", "purge", first, "--yes").stdout
    with pytest.raises(DeadLetterNotFound):
        dead_letters.get(first)
    assert dead_letters.get(second)

    assert "no dead letters to purge" in fleetpay("dlq", "purge", "--older-than", "1d", "--yes").stdout
    wait_until(lambda: (datetime.now(timezone.utc) - dead_letters.get(second).dead_lettered_at).total_seconds() > 1,
               timeout_s=5, what="the dead letter to be over a second old")
    aged = fleetpay("dlq", "purge", "--older-than", "1s", "--actor", "process_callback", "--yes")
    assert f"purged {second}" in aged.stdout
    with pytest.raises(DeadLetterNotFound):
        dead_letters.get(second)


def test_two_operators_requeuing_the_same_id_enqueue_it_once(worker, sessions, dead_letters, failing) -> None:  # type: ignore[no-untyped-def]
    inbox_id, receipt, _ = stored_callback(sessions)
    message_id = dead_letter(dead_letters, failing, inbox_id)
    seen_by_each = [dead_letters.find([message_id]) for _ in range(8)]  # all read it before anyone acts
    with ThreadPoolExecutor(8) as pool:
        moves = list(pool.map(dead_letters.requeue, seen_by_each))
    assert sorted(len(moved.done) for moved in moves) == [0] * 7 + [1]
    assert sum(len(moved.gone) for moved in moves) == 7
    wait_until(lambda: inbox_status(sessions, inbox_id) == "processed", timeout_s=15, what="the requeued message")
    assert postings(sessions, receipt) == 1


def test_bad_ids_and_usage_give_clear_errors(worker) -> None:  # type: ignore[no-untyped-def]
    unknown = str(uuid.uuid4())
    cases = [
        (("dlq", "show", unknown), 1, f"no dead letter {unknown}"),
        (("dlq", "requeue", unknown), 1, f"no dead letter {unknown}"),
        (("dlq", "purge", unknown, "--yes"), 1, f"no dead letter {unknown}"),
        (("dlq", "show", "not-an-id"), 2, "is not a message id"),
        (("dlq", "requeue"), 2, "message ids or --all"),
        (("dlq", "requeue", unknown, "--all"), 2, "message ids or --all"),
        (("dlq", "purge", "--older-than", "7x", "--yes"), 2, "is not a duration"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda case: fleetpay(*case[0], check=False), cases))
    for (args, code, text), result in zip(cases, results):
        assert result.returncode == code, (args, result.stderr)
        assert text in " ".join(result.stderr.split()), (args, result.stderr)


def test_operator_api_and_depth_gauge(settings, ingest_url, worker, sessions, dead_letters, failing) -> None:  # type: ignore[no-untyped-def]
    inbox_id, receipt, code = stored_callback(sessions, "200.00")
    requeued = dead_letter(dead_letters, failing, inbox_id)
    purged = dead_letter(dead_letters, failing, stored_callback(sessions)[0])
    token = settings.admin_token.get_secret_value()

    with httpx.Client(base_url=f"{ingest_url}/admin", timeout=10) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Bearer {settings.callback_token.get_secret_value()}"}):
            refused = anonymous.get("/dlq", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", headers
        assert anonymous.post("/dlq/purge", json={"ids": [purged]}).status_code == 401
    assert dead_letters.get(purged)  # the refused purge did nothing

    with httpx.Client(base_url=f"{ingest_url}/admin", timeout=10, headers={"Authorization": f"Bearer {token}"}) as admin:
        listed = admin.get("/dlq", params={"actor": "process_callback"}).json()
        assert {requeued, purged} <= {letter["id"] for letter in listed["dead_letters"]}
        depth = listed["depth"][settings.queue_name]
        assert f'fleetpay_dlq_depth{{queue="{settings.queue_name}"}} {float(depth)}' in httpx.get(f"{ingest_url}/metrics").text

        shown = admin.get(f"/dlq/{requeued}")
        assert shown.status_code == 200 and shown.json()["reference"] == f"inbox:{inbox_id}"
        unknown = str(uuid.uuid4())
        missing = admin.get(f"/dlq/{unknown}")
        assert missing.status_code == 404 and missing.json()["ids"] == [unknown]
        assert admin.get("/dlq/not-an-id").json()["error"] == "invalid_id"
        assert admin.post("/dlq/requeue", json={"ids": [requeued], "all": True}).status_code == 400
        assert admin.post("/dlq/purge", content=b"{not json").status_code == 400

        assert admin.post("/dlq/requeue", json={"ids": [requeued]}).json() == {"requeued": [requeued]}
        wait_until(lambda: inbox_status(sessions, inbox_id) == "processed", timeout_s=15, what="the requeued message")
        assert postings(sessions, receipt) == 1 and target_cents(sessions, code) == 10_000
        twice = admin.post("/dlq/requeue", json={"ids": [requeued]})
        assert twice.status_code == 404 and twice.json()["error"] == "not_found"

        assert admin.post("/dlq/purge", json={"ids": [purged, unknown]}).status_code == 404  # nothing done
        assert admin.post("/dlq/purge", json={"ids": [purged]}).json() == {"purged": [purged]}
        assert admin.post("/dlq/purge", json={"older_than": "1d"}).json() == {"purged": []}
        after = admin.get("/dlq").json()["depth"][settings.queue_name]
        assert after == depth - 2
        assert f'fleetpay_dlq_depth{{queue="{settings.queue_name}"}} {float(after)}' in httpx.get(f"{ingest_url}/metrics").text


def test_metrics_are_served_while_redis_is_down(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from ingest.app import build_app
    from workers.broker import build_broker

    no_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with serve(build_app(no_redis, engine=engine, broker=build_broker(no_redis))) as url:
        scraped = httpx.get(f"{url}/metrics", timeout=10)
        unavailable = httpx.get(f"{url}/admin/dlq", headers={"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}, timeout=10)
    assert scraped.status_code == 200 and "# TYPE fleetpay_dlq_depth gauge" in scraped.text
    assert "fleetpay_dlq_depth{" not in scraped.text
    assert unavailable.status_code == 503 and unavailable.json()["error"] == "redis_unavailable"
