"""What commands share: the settings and a database session for one command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from cli.output import fail
from db.engine import make_engine, make_sessionmaker
from fleetpay.settings import Settings, get_settings
from schemas.parsing import business_date, classify_account_ref


def settings() -> Settings:
    return get_settings()


def sessions() -> sessionmaker[Session]:
    """Sessions for a command that runs several transactions of its own (reconcile, close-day)."""
    return make_sessionmaker(make_engine(settings().require_database_url(), pool_size=2))


@contextmanager
def transaction() -> Iterator[Session]:
    """One transaction for one command: committed when the command succeeds."""
    engine = make_engine(settings().require_database_url(), pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def today() -> str:
    current = settings()
    now = datetime.now(ZoneInfo(current.timezone))
    return business_date(now, close_time=current.close_time, tz=current.timezone).isoformat()


def _code(raw: str, kind: Literal["vehicle", "driver"]) -> str:
    """The normalised code of a vehicle or driver as a user typed it (``d112006``, `` 25``), or a
    usage error (exit 2)."""
    current = settings()
    ref = classify_account_ref(raw, vehicle_code_digits=current.vehicle_code_digits,
                               driver_code_pattern=current.driver_code_pattern)
    if ref.kind != kind:
        shape = f"{current.vehicle_code_digits} digits" if kind == "vehicle" else f"pattern {current.driver_code_pattern}"
        raise fail(f"{raw!r} is not a {kind} code ({shape})", 2)
    return ref.code


def vehicle_code(raw: str) -> str:
    return _code(raw, "vehicle")


def driver_code(raw: str) -> str:
    return _code(raw, "driver")
