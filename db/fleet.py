"""Vehicles, drivers, assignments and driver days: the fleet side of the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, TypeVar

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, aliased

from db.audit import record_action
from db.models import DRIVER_ACCOUNT_KINDS, Account, DayOff, Driver, DriverDay, Vehicle
from fleetpay.people import operator_name
from fleetpay.settings import Settings

T = TypeVar("T")


class FleetError(ValueError):
    """An operator asked for something the fleet's data does not allow (unknown code, clash…)."""


def add_vehicle(session: Session, code: str) -> Vehicle:
    if session.execute(select(Vehicle.id).where(Vehicle.code == code)).first():
        raise FleetError(f"vehicle {code} exists")
    vehicle = Vehicle(code=code)
    session.add(vehicle)
    session.flush()
    return vehicle


def add_driver(
    session: Session,
    *,
    code: str,
    name: str,
    msisdn: str,
    daily_target_cents: int | None = None,
    fare_percent: int | None = None,
) -> Driver:
    if session.execute(select(Driver.id).where(Driver.code == code)).first():
        raise FleetError(f"driver {code} exists")
    driver = Driver(
        code=code,
        name=name,
        msisdn=msisdn,
        daily_target_cents=daily_target_cents,
        fare_percent=fare_percent,
    )
    session.add(driver)
    session.flush()
    session.add_all(
        Account(code=f"driver:{code}:{kind}", kind=kind, driver_id=driver.id)
        for kind in DRIVER_ACCOUNT_KINDS
    )
    session.flush()
    return driver


def get_vehicle(session: Session, code: str) -> Vehicle:
    vehicle = session.execute(select(Vehicle).where(Vehicle.code == code)).scalar_one_or_none()
    if vehicle is None:
        raise FleetError(f"no vehicle {code}")
    return vehicle


def get_driver(session: Session, code: str) -> Driver:
    driver = session.execute(select(Driver).where(Driver.code == code)).scalar_one_or_none()
    if driver is None:
        raise FleetError(f"no driver {code}")
    return driver


def driver_codes(session: Session) -> list[str]:
    return list(session.execute(select(Driver.code).order_by(Driver.code)).scalars())


def count_drivers(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Driver)).scalar_one()


def assign(session: Session, *, driver_code: str, vehicle_code: str, substitute: bool, replace: bool = False) -> None:
    """Make a driver the vehicle's regular (or substitute) driver, freeing their earlier vehicle.
    A vehicle that has another driver in that seat is refused unless ``replace``."""
    driver = get_driver(session, driver_code)
    vehicle = get_vehicle(session, vehicle_code)
    seated = vehicle.substitute_driver_id if substitute else vehicle.regular_driver_id
    if seated is not None and seated != driver.id and not replace:
        holder = session.execute(select(Driver.code).where(Driver.id == seated)).scalar_one()
        seat = "substitute" if substitute else "regular driver"
        raise FleetError(f"vehicle {vehicle_code} has {holder} as its {seat}: give --replace to replace them")
    if substitute:
        vehicle.substitute_driver_id = driver.id
    else:
        session.execute(
            update(Vehicle).where(Vehicle.regular_driver_id == driver.id).values(regular_driver_id=None)
        )
        session.flush()
        vehicle.regular_driver_id = driver.id
    session.flush()


def end_substitute_shift(session: Session, vehicle_code: str) -> str:
    """The vehicle's substitute stands down (its fares go to its regular driver again); returns the
    substitute's code. ``FleetError`` when the vehicle has no substitute."""
    vehicle = get_vehicle(session, vehicle_code)
    if vehicle.substitute_driver_id is None:
        raise FleetError(f"vehicle {vehicle_code} has no substitute")
    code = session.execute(select(Driver.code).where(Driver.id == vehicle.substitute_driver_id)).scalar_one()
    vehicle.substitute_driver_id = None
    session.flush()
    return code


def is_day_off(session: Session, driver_id: int, day: date) -> bool:
    return session.get(DayOff, (driver_id, day)) is not None


def set_day_off(session: Session, *, driver_code: str, day: date, off: bool, operator: str, reason: str | None) -> bool:
    """Roster (``off``) or cancel a driver's day off; False when nothing changed. A day whose close
    has run is refused: the close has counted it already (undo the close first)."""
    operator = operator_name(operator)
    driver = lock_driver(session, get_driver(session, driver_code).id)
    closed = session.execute(
        select(DriverDay.closed_at).where(DriverDay.driver_id == driver.id, DriverDay.business_date == day)
    ).scalar_one_or_none()
    if closed is not None:
        raise FleetError(f"{driver_code}'s business day {day} is closed already: undo the close first")
    if off:
        inserted = session.execute(
            pg_insert(DayOff).values(driver_id=driver.id, business_date=day, operator=operator, reason=reason)
            .on_conflict_do_nothing().returning(DayOff.driver_id)
        ).first()
        return inserted is not None
    row = session.get(DayOff, (driver.id, day))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def days_off(session: Session, driver_id: int, *, since: date) -> list[date]:
    return list(session.execute(
        select(DayOff.business_date).where(DayOff.driver_id == driver_id, DayOff.business_date >= since)
        .order_by(DayOff.business_date)
    ).scalars())


def list_drivers(
    session: Session, *, after_code: str | None = None, only_code: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Drivers in code order from ``after_code`` (keyset pages), or the one ``only_code``, with the
    vehicles they drive."""
    regular, substitute = aliased(Vehicle), aliased(Vehicle)
    query = (
        select(Driver, regular.code, substitute.code)
        .outerjoin(regular, regular.regular_driver_id == Driver.id)
        .outerjoin(substitute, substitute.substitute_driver_id == Driver.id)
        .order_by(Driver.code)
        .limit(limit)
    )
    if after_code:
        query = query.where(Driver.code > after_code)
    if only_code:
        query = query.where(Driver.code == only_code)
    return [
        {"code": driver.code, "name": driver.name, "msisdn": driver.msisdn, "status": driver.status,
         "regular_of": regular_code, "substitute_of": substitute_code}
        for driver, regular_code, substitute_code in session.execute(query).all()
    ]


def list_vehicles(session: Session, *, after_code: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Vehicles in code order from ``after_code``, with their regular driver and substitute."""
    regular, substitute = aliased(Driver), aliased(Driver)
    query = (
        select(Vehicle.code, regular.code, substitute.code)
        .outerjoin(regular, regular.id == Vehicle.regular_driver_id)
        .outerjoin(substitute, substitute.id == Vehicle.substitute_driver_id)
        .order_by(Vehicle.code)
        .limit(limit)
    )
    if after_code:
        query = query.where(Vehicle.code > after_code)
    return [
        {"code": code, "regular_driver": regular_code, "substitute": substitute_code}
        for code, regular_code, substitute_code in session.execute(query).all()
    ]


@dataclass(frozen=True)
class Payee:
    """Who a C2B account reference pays: a driver, and in what role."""

    driver_id: int
    role: Literal["regular", "substitute", "company"]


# The statements of the payment path are built once: building one per call cost more CPU than
# PostgreSQL spent running it (docs/benchmarks.md, "Apply").
_VEHICLE_DRIVERS = select(Vehicle.__table__.c.regular_driver_id, Vehicle.__table__.c.substitute_driver_id).where(
    Vehicle.__table__.c.code == bindparam("code")
)
# populate_existing: a Driver the session loaded before the lock is read again under it.
# FOR NO KEY UPDATE: it serialises every money decision about the driver as FOR UPDATE would, but
# lets a foreign-key check on the driver through (``drivers assign`` updating a vehicle row), which
# FOR UPDATE would make wait, a deadlock with a close holding the driver and waiting for the vehicle.
_LOCK_DRIVER = (
    select(Driver)
    .where(Driver.id == bindparam("driver_id"))
    .with_for_update(key_share=True)
    .execution_options(populate_existing=True)
)
_DRIVER_DAY = (
    select(DriverDay)
    .where(DriverDay.driver_id == bindparam("driver_id"), DriverDay.business_date == bindparam("business_date"))
    .execution_options(populate_existing=True)
)
_NEW_DRIVER_DAY = pg_insert(DriverDay.__table__).on_conflict_do_nothing()
_day = DriverDay.__table__.c
_ADD_CONTRIBUTION = (
    update(DriverDay.__table__)
    .where(_day.driver_id == bindparam("day_driver_id"), _day.business_date == bindparam("day_date"))
    .values(contributed_cents=_day.contributed_cents + bindparam("amount_cents"))
)


def payee_for_vehicle(session: Session, vehicle_code: str) -> Payee | None:
    """The vehicle's active driver: its substitute if one is assigned, else its regular driver."""
    row = session.execute(_VEHICLE_DRIVERS, {"code": vehicle_code}).first()
    if row is None:
        return None
    regular_id, substitute_id = row
    if substitute_id is not None:
        return Payee(substitute_id, "substitute")
    if regular_id is not None:
        return Payee(regular_id, "regular")
    return None


def payee_for_driver_code(session: Session, driver_code: str) -> Payee | None:
    """A driver paying the company; a driver with no vehicle is paused, so their money is unmatched."""
    row = session.execute(
        select(Driver.id).where(
            Driver.code == driver_code,
            select(Vehicle.id)
            .where((Vehicle.regular_driver_id == Driver.id) | (Vehicle.substitute_driver_id == Driver.id))
            .exists(),
        )
    ).first()
    return None if row is None else Payee(row[0], "company")


def set_sms_preferences(
    session: Session, driver_code: str, *, language: str | None, opt_out: bool | None, by: str
) -> Driver:
    """A driver's SMS language (``en``, ``sw``, or ``default``: the fleet's) and opting out of the
    optional notices; what is None stays as it is. Recorded in the audit log under ``by``."""
    driver = get_driver(session, driver_code)
    before = (driver.language, driver.sms_opt_out)
    if language is not None:
        if language not in ("en", "sw", "default"):
            raise FleetError(f"language {language!r}: en, sw or default")
        driver.language = None if language == "default" else language
    if opt_out is not None:
        driver.sms_opt_out = opt_out
    if (driver.language, driver.sms_opt_out) != before:
        record_action(session, action="sms_preferences", subject=f"driver:{driver.code}", operator=by,
                      reason="driver's SMS preferences", detail={"language": driver.language, "opt_out": driver.sms_opt_out})
    return driver


def payee_for_msisdn(session: Session, msisdn: str) -> Payee | None:
    row = session.execute(select(Driver.code).where(Driver.msisdn == msisdn)).first()
    return None if row is None else payee_for_driver_code(session, row[0])


def lock_driver(session: Session, driver_id: int) -> Driver:
    """Take the driver's row lock for the rest of the transaction: every money decision about a
    driver (target met? how much payable?) is made under it."""
    return session.execute(_LOCK_DRIVER, {"driver_id": driver_id}).scalar_one()


@dataclass(frozen=True)
class DriverTerms:
    """A driver's effective business terms: their own overrides, else the global settings."""

    base_target_cents: int
    fare_percent: int
    target_sharing: bool
    instant_payouts: bool


def driver_terms(driver: Driver, settings: Settings) -> DriverTerms:
    return DriverTerms(
        base_target_cents=_own_or(driver.daily_target_cents, settings.daily_target_cents),
        fare_percent=_own_or(driver.fare_percent, settings.fare_percent),
        target_sharing=_own_or(driver.target_sharing, settings.target_sharing),
        instant_payouts=_own_or(driver.instant_payouts, settings.instant_payouts),
    )


def _own_or(own: T | None, default: T) -> T:
    return default if own is None else own


def driver_day(session: Session, driver: Driver, business_date: date, base_target_cents: int) -> DriverDay:
    """The driver's row for ``business_date``, created with today's target (base + carried
    shortfall) on first use. Call under the driver's lock."""
    key = {"driver_id": driver.id, "business_date": business_date}
    day = session.execute(_DRIVER_DAY, key).scalar_one_or_none()
    if day is not None:
        return day
    session.execute(
        _NEW_DRIVER_DAY,
        {
            **key,
            "target_cents": base_target_cents + driver.rollover_cents,
            "carried_cents": driver.rollover_cents,
            "misses_carried": driver.consecutive_misses,
        },
    )
    return session.execute(_DRIVER_DAY, key).scalar_one()


def add_contribution(session: Session, driver_id: int, business_date: date, amount_cents: int) -> None:
    """Core UPDATE: the session holds no day row to keep in step (``driver_day`` reloads it)."""
    if amount_cents:
        session.execute(
            _ADD_CONTRIBUTION, {"day_driver_id": driver_id, "day_date": business_date, "amount_cents": amount_cents}
        )
