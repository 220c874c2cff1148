"""The group commit against the real database: one batch, its ids and duplicates; answers that go
out as soon as the batch is committed, before its rows are enqueued; and no answer but a refusal
when the database cannot be reached."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.models import Inbox
from ingest.inbox_writer import EXTERNAL_ID_MAX_CHARS, DatabaseUnavailable, InboxRecord, InboxWriter
from tests.support import wait_until


def write_together(writer: InboxWriter, earlier: InboxRecord, records: list[InboxRecord]) -> list[int | None]:
    """``earlier`` in a batch of its own, then ``records`` queued at once (one flusher: one batch)."""

    async def main() -> list[int | None]:
        await writer.start()
        try:
            await writer.write(earlier)
            return list(await asyncio.gather(*(writer.write(record) for record in records)))
        finally:
            await writer.stop()

    return asyncio.run(main())


def test_one_batch_gives_ids_to_new_rows_and_none_to_duplicates(engine: Engine, unique: str) -> None:
    enqueued: list[list[int]] = []
    writer = InboxWriter(engine, on_committed=enqueued.append, flushers=1)
    earlier = InboxRecord("c2b_confirmation", f"IW{unique}0", "{}", source_ip="10.0.0.1")
    fresh = InboxRecord("c2b_confirmation", f"IW{unique}1", '{"a": "x\x00y"}')
    long_id = InboxRecord("stk_result", f"IW{unique}" + "L" * 300, "{}")
    rejected = InboxRecord("c2b_confirmation", f"rejected:IW{unique}", "junk", "rejected", "not_json", "10.0.0.2")

    ids = write_together(writer, earlier, [fresh, fresh, long_id, rejected, earlier])

    fresh_id, again, long_id_id, rejected_id, earlier_again = ids
    assert fresh_id is not None and long_id_id is not None and rejected_id is not None
    assert again is None and earlier_again is None  # the second copy in a batch, and a row already there
    # The enqueue follows the answers, in the batch's thread.
    wait_until(lambda: len(enqueued) == 2, timeout_s=5, what="the second batch's enqueue")
    assert enqueued[1] == [fresh_id, long_id_id]  # rejected rows are not enqueued
    with Session(engine) as session:
        stored = {row.id: row for row in session.scalars(select(Inbox).where(Inbox.id.in_(enqueued[0] + [i for i in ids if i is not None])))}
    assert stored[fresh_id].body == '{"a": "x\\x00y"}'
    assert stored[long_id_id].external_id == long_id.external_id[:EXTERNAL_ID_MAX_CHARS]
    assert (stored[rejected_id].status, stored[rejected_id].reason, stored[rejected_id].source_ip) == (
        "rejected", "not_json", "10.0.0.2")
    assert (stored[enqueued[0][0]].source_ip, stored[enqueued[0][0]].reason) == ("10.0.0.1", None)


def test_requests_are_answered_before_their_rows_are_enqueued(engine: Engine, unique: str) -> None:
    answered = threading.Event()
    answered_before_enqueue: list[bool] = []
    writer = InboxWriter(engine, on_committed=lambda ids: answered_before_enqueue.append(answered.wait(timeout=5)))

    async def main() -> None:
        await writer.start()
        try:
            await writer.write(InboxRecord("c2b_confirmation", f"IW{unique}A", "{}"))
            answered.set()
        finally:
            await writer.stop()

    asyncio.run(main())
    wait_until(lambda: bool(answered_before_enqueue), timeout_s=10, what="the enqueue")
    assert answered_before_enqueue == [True]


def test_an_unreachable_database_refuses_the_batch_without_trying_each_row() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/none", pool_size=1)
    attempts: list[int] = []
    event.listen(engine, "do_connect", lambda *args: attempts.append(1))
    writer = InboxWriter(engine, on_committed=lambda ids: None, flushers=1)
    records = [InboxRecord("c2b_confirmation", f"IWDOWN{i}", "{}") for i in range(20)]

    async def main() -> list[BaseException | int | None]:
        await writer.start()
        try:
            with pytest.raises(DatabaseUnavailable):
                await writer.write(InboxRecord("c2b_confirmation", "IWDOWN", "{}"))
            return list(await asyncio.gather(*(writer.write(r) for r in records), return_exceptions=True))
        finally:
            await writer.stop()

    outcomes = asyncio.run(main())
    assert all(isinstance(o, DatabaseUnavailable) for o in outcomes)
    assert len(attempts) == 2  # one per batch, not one per row


def test_a_row_the_database_refuses_does_not_refuse_its_neighbours(engine: Engine, unique: str) -> None:
    enqueued: list[list[int]] = []
    writer = InboxWriter(engine, on_committed=enqueued.append, flushers=1)
    good = [InboxRecord("c2b_confirmation", f"IW{unique}G{i}", "{}") for i in range(3)]
    bad = InboxRecord("c2b_confirmation", f"IW{unique}B", "{}", status="no_such_state")  # fails the status check

    async def main() -> list[int | BaseException | None]:
        await writer.start()
        try:
            await writer.write(InboxRecord("c2b_confirmation", f"IW{unique}0", "{}"))
            return list(await asyncio.gather(*(writer.write(r) for r in [good[0], bad, *good[1:]]), return_exceptions=True))
        finally:
            await writer.stop()

    first, refused, *others = asyncio.run(main())
    assert isinstance(refused, DatabaseUnavailable)
    assert all(isinstance(i, int) for i in [first, *others])
    wait_until(lambda: len(enqueued) == 2, timeout_s=5, what="the batch's enqueue")
    assert enqueued[1] == [first, *others]
