"""PostgreSQL advisory locks held for a whole job that runs many transactions (the daily close,
undoing one), on a connection of their own in autocommit: no transaction stays open meanwhile.
That connection must be PostgreSQL's own session, never one PgBouncer shares out per transaction
(``db.engine.lock_engine`` picks the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session


class LockBusy(RuntimeError):
    """Another job holds the lock."""


@contextmanager
def advisory_lock(engine: Engine, lock_id: int, *, wait: bool) -> Iterator[None]:
    """Hold session-level advisory lock ``lock_id`` for the block: wait for it, or raise
    ``LockBusy`` at once (``wait=False``). The lock goes with the connection if the process dies."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if wait:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
        elif not connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}).scalar_one():
            raise LockBusy(lock_id)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})


def transaction_lock(session: Session, name: str) -> None:
    """Hold an advisory lock named ``name`` until this transaction ends: work on the same thing in
    two transactions at once (two people asking the same thing) runs one after the other."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
