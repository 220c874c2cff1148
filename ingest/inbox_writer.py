"""Group commit for the inbox: concurrent callbacks share one INSERT and one COMMIT.

A callback is acknowledged only after its row is committed. Committing once per request bounds the
ingest by fsyncs; here, while one batch is being written, the next requests gather in a queue and
go out together in the next batch. No request waits for a timer: a lone request is written at once.

The batches are written by a few long-lived writer threads fed by a thread-safe queue: the event
loop only queues a record and awaits its future, and no batch pays for a hop through anyio's
thread pool. The writers hand committed ids to one enqueuer thread, so a Redis that hangs holds up
no write; if its backlog fills, ids are left to the sweeper. On stop, the threads finish what was
queued before they leave.

Right after the COMMIT the batch's requests are answered; then its new rows are enqueued for the
workers. The enqueue does not hold up the answers, and its failure (Redis down) does not fail them:
the rows are durable, and the inbox sweeper enqueues them later.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import structlog
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from schemas.callbacks import with_digest

log = structlog.get_logger("fleetpay.ingest")

EXTERNAL_ID_MAX_CHARS = 200
ENQUEUE_BACKLOG_MAX = 1024  # batches of committed ids waiting for Redis; more are left to the sweeper

# One statement for every batch size, so it is compiled once: the rows travel as one array per
# column (of ``InboxRecord.row``; every one is text). A multi-row VALUES would be a new statement,
# built and compiled again, for each batch size.
INSERT_ROWS = text(
    "INSERT INTO inbox (kind, external_id, body, status, reason, source_ip, body_digest)"
    " SELECT * FROM unnest(CAST(:kind AS text[]), CAST(:external_id AS text[]), CAST(:body AS text[]),"
    " CAST(:status AS text[]), CAST(:reason AS text[]), CAST(:source_ip AS text[]), CAST(:body_digest AS text[]))"
    " ON CONFLICT (kind, external_id) DO NOTHING"
    " RETURNING id, kind, external_id"
)
# A duplicate whose body differs from the stored one (same receipt, other content) is kept beside
# it as a ``conflict`` row, never applied: the money is applied once, by the first body. Keyed by
# the receipt and the body's digest, so the same conflicting body sent again is kept once.
# (A stored row without a digest, older than digests or recovered from Pull Transactions, counts as
# different: its second body is kept too.)
INSERT_CONFLICTS = text(
    "INSERT INTO inbox (kind, external_id, body, status, reason, source_ip, body_digest)"
    " SELECT i.kind, i.conflict_id, i.body, 'conflict', 'conflicts_with:' || e.id, i.source_ip, i.body_digest"
    " FROM unnest(CAST(:kind AS text[]), CAST(:external_id AS text[]), CAST(:conflict_id AS text[]),"
    " CAST(:body AS text[]), CAST(:source_ip AS text[]), CAST(:body_digest AS text[]))"
    " AS i(kind, external_id, conflict_id, body, source_ip, body_digest)"
    " JOIN inbox e ON e.kind = i.kind AND e.external_id = i.external_id"
    " WHERE e.body_digest IS DISTINCT FROM i.body_digest"
    " ON CONFLICT (kind, external_id) DO NOTHING"
    " RETURNING id, external_id"
)


class DatabaseUnavailable(Exception):
    """The inbox could not be written: the callback must not be acknowledged."""


Outcome = int | None | DatabaseUnavailable


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
    body_digest: str | None = None  # of the decoded body; None when it could not be decoded

    def row(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "external_id": _storable(self.external_id)[:EXTERNAL_ID_MAX_CHARS],
            "body": _storable(self.body),
            "status": self.status,
            "reason": self.reason,
            "source_ip": self.source_ip,
            "body_digest": self.body_digest,
        }


@dataclass
class _Pending:
    record: InboxRecord
    done: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class InboxWriter:
    """Writes inbox records in shared transactions.

    Parameters:
      engine: the SQLAlchemy engine of the inbox database.
      on_committed: called (in the enqueuer thread) with the ids of a batch's newly inserted
        ``received`` rows, after their COMMIT and after their requests are answered; used to
        enqueue them. Its failures are logged, never raised.
      batch_max: most records in one INSERT (default 256).
      flushers: writer threads, i.e. batches in flight at once (default 2), so one can fill
        while another commits.
      linger_s: how long the enqueuer gathers committed ids before handing them on, up to
        ``enqueue_max`` (default 0: each batch at once). Under load the group-commit batches are
        small; gathering them for a few milliseconds lets a worker apply many rows in one
        transaction, at the cost of that much latency before a row is applied (none before it
        is acknowledged).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        on_committed: Callable[[list[int]], None],
        batch_max: int = 256,
        flushers: int = 2,
        linger_s: float = 0.0,
        enqueue_max: int = 100,
    ) -> None:
        self.engine = engine
        self.on_committed = on_committed
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.enqueue_max = enqueue_max
        self.flushers_n = flushers
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()  # None: a writer's stop
        self._committed: queue.Queue[list[int] | None] = queue.Queue(ENQUEUE_BACKLOG_MAX)  # None: stop
        self._threads: list[threading.Thread] = []
        self._enqueuer: threading.Thread | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._flush_forever, args=(loop,), name=f"inbox-writer-{n}", daemon=True)
            for n in range(self.flushers_n)
        ]
        self._enqueuer = threading.Thread(target=self._enqueue_forever, name="inbox-enqueuer", daemon=True)
        for thread in [*self._threads, self._enqueuer]:
            thread.start()

    async def stop(self) -> None:
        """Let the writers finish what is queued (one stop mark each), then the enqueuer."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            await anyio.to_thread.run_sync(thread.join)
        if self._enqueuer is not None:
            self._committed.put(None)
            await anyio.to_thread.run_sync(self._enqueuer.join)
        self._threads, self._enqueuer = [], None

    async def write(self, record: InboxRecord) -> int | None:
        """Make ``record`` durable; returns its new id, or None when it was already there."""
        pending = _Pending(record)
        self._queue.put(pending)
        return await pending.done

    def _flush_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        """A writer thread: take what is queued (up to ``batch_max``) as one batch, write it."""
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:  # this writer's stop mark: write the batch, then leave
                    stopping = True
                    break
                batch.append(pending)
            try:
                self._commit(batch, loop)
            except Exception as error:  # a bug: answer 503 (M-Pesa retries) rather than hang, and go on
                log.exception("inbox_batch_failed", batch=len(batch))
                loop.call_soon_threadsafe(_refuse, batch, DatabaseUnavailable(repr(error)))

    def _commit(self, batch: Sequence[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        """Write the batch, answer its requests, then hand its new rows to the enqueuer."""
        records = [pending.record for pending in batch]
        outcomes = self._write_batch(records)
        # Committed (or refused): the answers need nothing more, so they go before the enqueue.
        loop.call_soon_threadsafe(_answer, batch, outcomes)
        new_ids = [i for i, r in zip(outcomes, records, strict=True) if isinstance(i, int) and r.status == "received"]
        if new_ids:
            try:
                self._committed.put_nowait(new_ids)
            except queue.Full:  # Redis is far behind: the rows are durable, the sweeper enqueues them
                log.warning("enqueue_backlog_full_sweeper_will_retry", inbox_ids=new_ids)

    def _enqueue_forever(self) -> None:
        stopping = False
        while not stopping and (new_ids := self._committed.get()) is not None:
            deadline = time.monotonic() + self.linger_s
            while len(new_ids) < self.enqueue_max and (left := deadline - time.monotonic()) > 0:
                try:
                    more = self._committed.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:  # stop: hand on what was gathered first
                    stopping = True
                    break
                new_ids = new_ids + more
            try:
                self.on_committed(new_ids)
            except Exception as error:  # noqa: BLE001 — the rows are durable; the sweeper enqueues them
                log.warning("enqueue_failed_sweeper_will_retry", error=str(error), inbox_ids=new_ids)

    def _write_batch(self, records: Sequence[InboxRecord]) -> list[Outcome]:
        """Each record's outcome: its new id, None (already there) or ``DatabaseUnavailable``."""
        started = time.perf_counter()
        try:
            ids: list[Outcome] = list(self._insert(records))
        except DBAPIError as error:
            log.error("inbox_write_failed", error=str(error.orig), batch=len(records))
            one_row = isinstance(error, IntegrityError | DataError) and not error.connection_invalidated
            if one_row and len(records) > 1:
                # One bad row must not refuse its neighbours: write them one by one.
                return [outcome for record in records for outcome in self._write_batch([record])]
            # The database is down, starting or out of reach: every attempt would wait to fail.
            return [DatabaseUnavailable(str(error.orig))] * len(records)
        log.debug("inbox_batch", size=len(records), ms=round((time.perf_counter() - started) * 1000, 2))
        return ids

    def _insert(self, records: Sequence[InboxRecord]) -> list[int | None]:
        rows = [record.row() for record in records]
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        with self.engine.begin() as connection:
            inserted = connection.execute(INSERT_ROWS, columns).all()
            by_key = {(kind, external_id): inbox_id for inbox_id, kind, external_id in inserted}
            ids: list[int | None] = []
            for row in rows:
                # The first of several copies in one batch gets the id; the others are duplicates.
                ids.append(by_key.pop((row["kind"], row["external_id"]), None))
            duplicates = [row for row, inbox_id in zip(rows, ids) if inbox_id is None and row["status"] == "received"
                          and row["body_digest"] is not None]
            if duplicates:
                self._keep_conflicts(connection, duplicates)
        return ids

    @staticmethod
    def _keep_conflicts(connection: Connection, duplicates: Sequence[dict[str, str | None]]) -> None:
        """Keep each duplicate whose body differs from the stored one (in the batch's transaction)."""
        columns = {name: [row[name] for row in duplicates] for name in ("kind", "external_id", "body", "source_ip", "body_digest")}
        columns["conflict_id"] = [with_digest(row["external_id"] or "", row["body_digest"] or "") for row in duplicates]
        kept = connection.execute(INSERT_CONFLICTS, columns).all()
        if kept:
            log.warning("conflicting_duplicates_kept", inbox_ids=[inbox_id for inbox_id, _ in kept],
                        external_ids=[external_id for _, external_id in kept])


def _answer(batch: Sequence[_Pending], outcomes: Sequence[Outcome]) -> None:
    """On the event loop, which owns the futures (as ``_refuse``)."""
    for pending, outcome in zip(batch, outcomes, strict=True):
        if pending.done.done():  # its request was cancelled meanwhile
            continue
        if isinstance(outcome, DatabaseUnavailable):
            pending.done.set_exception(outcome)
        else:
            pending.done.set_result(outcome)


def _refuse(batch: Sequence[_Pending], error: DatabaseUnavailable) -> None:
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(error)
