"""Group commit for the inbox: concurrent callbacks share one INSERT and one COMMIT.

A callback is acknowledged only after its row is committed. Committing once per request bounds the
ingest by fsyncs; here, while one batch is being written, the next requests gather in a queue and
go out together in the next batch. No request waits for a timer: a lone request is written at once.

After the COMMIT the new rows are enqueued for the workers. An enqueue failure (Redis down) does not
fail the request: the row is durable, and the inbox sweeper enqueues it later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import structlog
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from db.models import Inbox

log = structlog.get_logger("fleetpay.ingest")

EXTERNAL_ID_MAX_CHARS = 200


class DatabaseUnavailable(Exception):
    """The inbox could not be written: the callback must not be acknowledged."""


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL; keep it visible instead of failing the batch.
    return text.replace("\x00", "\\x00")


@dataclass(frozen=True)
class InboxRecord:
    kind: str
    external_id: str
    body: str
    status: str = "received"
    reason: str | None = None
    source_ip: str | None = None

    def row(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "external_id": _storable(self.external_id)[:EXTERNAL_ID_MAX_CHARS],
            "body": _storable(self.body),
            "status": self.status,
            "reason": self.reason,
            "source_ip": self.source_ip,
        }


@dataclass
class _Pending:
    record: InboxRecord
    done: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class InboxWriter:
    """Writes inbox records in shared transactions.

    Parameters:
      engine: the SQLAlchemy engine of the inbox database.
      on_committed: called (in a worker thread) with the ids of newly inserted ``received`` rows,
        after their COMMIT; used to enqueue them. Its failures are logged, never raised.
      batch_max: most records in one INSERT (default 256).
      flushers: batches in flight at once (default 2), so one can fill while another commits.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        on_committed: Callable[[list[int]], None],
        batch_max: int = 256,
        flushers: int = 2,
    ) -> None:
        self.engine = engine
        self.on_committed = on_committed
        self.batch_max = batch_max
        self.flushers_n = flushers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_forever()) for _ in range(self.flushers_n)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def write(self, record: InboxRecord) -> int | None:
        """Make ``record`` durable; returns its new id, or None when it was already there."""
        pending = _Pending(record)
        await self._queue.put(pending)
        return await pending.done

    async def _flush_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                ids = await anyio.to_thread.run_sync(self._write_batch, [p.record for p in batch])
            except DatabaseUnavailable as error:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending, inbox_id in zip(batch, ids, strict=True):
                if not pending.done.done():
                    pending.done.set_result(inbox_id)

    def _write_batch(self, records: Sequence[InboxRecord]) -> list[int | None]:
        started = time.perf_counter()
        try:
            ids = self._insert(records)
        except DBAPIError as error:
            if error.connection_invalidated or len(records) == 1:
                log.error("inbox_write_failed", error=str(error.orig), batch=len(records))
                raise DatabaseUnavailable(str(error.orig)) from error
            # One bad row must not refuse its neighbours: write them one by one.
            ids = []
            for record in records:
                ids.extend(self._write_batch([record]))
            return ids
        new_ids = [i for i, r in zip(ids, records, strict=True) if i is not None and r.status == "received"]
        if new_ids:
            try:
                self.on_committed(new_ids)
            except Exception as error:  # noqa: BLE001 — the rows are durable; the sweeper enqueues them
                log.warning("enqueue_failed_sweeper_will_retry", error=str(error), inbox_ids=new_ids)
        log.debug("inbox_batch", size=len(records), ms=round((time.perf_counter() - started) * 1000, 2))
        return ids

    def _insert(self, records: Sequence[InboxRecord]) -> list[int | None]:
        rows = [record.row() for record in records]
        with self.engine.begin() as connection:
            inserted = connection.execute(
                pg_insert(Inbox)
                .values(rows)
                .on_conflict_do_nothing(index_elements=[Inbox.kind, Inbox.external_id])
                .returning(Inbox.id, Inbox.kind, Inbox.external_id)
            ).all()
        by_key = {(kind, external_id): inbox_id for inbox_id, kind, external_id in inserted}
        ids: list[int | None] = []
        for row in rows:
            # The first of several copies in one batch gets the id; the others are duplicates.
            ids.append(by_key.pop((row["kind"], row["external_id"]), None))
        return ids


