"""Engines and sessions. One engine per process; sessions are short and explicit."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from fleetpay.settings import sqlalchemy_url


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


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: committed rows stay readable after the transaction ends.
    return sessionmaker(engine, expire_on_commit=False)
