"""Engines and sessions. One engine per process; sessions are short and explicit."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from fleetpay.settings import Settings, sqlalchemy_url


def make_engine(database_url: str, *, pool_size: int = 10) -> Engine:
    return create_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # A round trip per checkout, kept on purpose: a transaction that records what Daraja
        # answered (after the HTTP call) must not fail on a connection PostgreSQL dropped meanwhile.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "fleetpay"},
    )


def lock_engine(settings: Settings, engine: Engine) -> Engine:
    """Where session-level advisory locks are taken: ``engine``, unless ``database_direct_url`` says
    it goes through PgBouncer in transaction mode. There a lock would stay on the server connection
    the pooler hands to whichever client comes next (which then holds it too), and survive its
    holder's death; so it is taken on PostgreSQL itself."""
    return _direct_engine(settings.database_direct_url) if settings.database_direct_url else engine


@lru_cache(maxsize=4)
def _direct_engine(database_url: str) -> Engine:
    """One per process and URL, small: it only holds a lock or two (the leader's, a close's)."""
    return make_engine(database_url, pool_size=2)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: committed rows stay readable after the transaction ends.
    return sessionmaker(engine, expire_on_commit=False)
