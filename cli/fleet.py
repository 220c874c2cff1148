"""Fleet commands: vehicles, drivers, balances and unmatched money."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Optional

import typer
from sqlalchemy.orm import Session

from cli import context
from cli.output import JsonFlag, emit, emit_json, emit_table, fail, kes
from cli.requests import UserActs, UserAsks, acting_user, ask_from_shell
from db import fleet, notifications
from db.balances import driver_balance
from db.fleet import FleetError
from schemas.parsing import InvalidField, require_msisdn

vehicles = typer.Typer(help="Vehicles: a vehicle's code is the C2B account number fares are paid to.")
drivers = typer.Typer(help="Drivers: their M-Pesa number receives their shares by B2C.")
unmatched = typer.Typer(help="Payments in suspense, waiting for an operator to assign them.")
deposits = typer.Typer(help="Security deposits moved by hand: through the ledger, named, refunds approved by a second person.")


@vehicles.command("add")
def vehicles_add(code: Annotated[str, typer.Option(help="e.g. 025")]) -> None:
    """Register a vehicle."""
    vehicle_code = context.vehicle_code(code)
    try:
        with context.transaction() as session:
            fleet.add_vehicle(session, vehicle_code)
    except FleetError as error:
        raise fail(str(error)) from error
    typer.echo(f"vehicle {vehicle_code} added")


@drivers.command("add")
def drivers_add(
    code: Annotated[str, typer.Option(help="e.g. D112006")],
    name: Annotated[str, typer.Option()],
    msisdn: Annotated[str, typer.Option(help="M-Pesa number: 07…, +2547…, 2547…")],
    vehicle: Annotated[Optional[str], typer.Option(help="Assign as regular driver of this vehicle.")] = None,
    target_kes: Annotated[Optional[int], typer.Option(min=0, help="Own daily target (KES).")] = None,
    fare_percent: Annotated[Optional[int], typer.Option(min=1, max=100, help="Own fare share (%).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the vehicle's present regular driver.")] = False,
) -> None:
    """Register a driver (and optionally assign a vehicle; one that has a regular driver needs --replace)."""
    driver_code = context.driver_code(code)
    try:
        number = require_msisdn(msisdn)
    except InvalidField as error:
        raise fail(f"{msisdn!r} is not an M-Pesa number (2547XXXXXXXX / 2541XXXXXXXX)", 2) from error
    try:
        with context.transaction() as session:
            fleet.add_driver(
                session,
                code=driver_code,
                name=name,
                msisdn=number,
                daily_target_cents=None if target_kes is None else target_kes * 100,
                fare_percent=fare_percent,
            )
            if vehicle:
                fleet.assign(session, driver_code=driver_code, vehicle_code=context.vehicle_code(vehicle), substitute=False,
                             replace=replace)
    except FleetError as error:
        raise fail(str(error)) from error
    typer.echo(f"driver {driver_code} added" + (f", regular driver of {context.vehicle_code(vehicle)}" if vehicle else ""))


@drivers.command("assign")
def drivers_assign(
    code: Annotated[str, typer.Option()],
    vehicle: Annotated[str, typer.Option()],
    substitute: Annotated[bool, typer.Option("--substitute", help="As the vehicle's substitute.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace whoever holds that seat now.")] = False,
) -> None:
    """Assign a vehicle to a driver, as regular driver or substitute (a taken seat needs --replace)."""
    try:
        with context.transaction() as session:
            fleet.assign(session, driver_code=context.driver_code(code), vehicle_code=context.vehicle_code(vehicle),
                         substitute=substitute, replace=replace)
    except FleetError as error:
        raise fail(str(error)) from error
    typer.echo(f"driver {context.driver_code(code)} assigned to {context.vehicle_code(vehicle)}" + (" as substitute" if substitute else ""))


PAGE_MAX = 10_000


def _page(rows: list[dict[str, object]], limit: int, as_json: bool, title: str, columns: list[str], key: str) -> None:
    """One page of a listing: with ``--json`` ``{key: rows, "next_after": code or null}``; for
    people, a table and the command line of the next page when there is one."""
    next_after = rows[-1]["code"] if len(rows) == limit else None
    if as_json:
        emit_json({key: rows, "next_after": next_after})
        return
    emit_table(title, rows, columns)
    if next_after:
        typer.echo(f"more: run again with --after {next_after}")


@vehicles.command("list")
def vehicles_list(
    after: Annotated[Optional[str], typer.Option(help="Start after this vehicle code (the next page).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=PAGE_MAX)] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Vehicles in code order, with their regular driver and substitute."""
    with context.transaction() as session:
        rows = fleet.list_vehicles(session, after_code=context.vehicle_code(after) if after else None, limit=limit)
    _page(rows, limit, as_json, "vehicles", ["code", "regular_driver", "substitute"], "vehicles")


@drivers.command("list")
def drivers_list(
    after: Annotated[Optional[str], typer.Option(help="Start after this driver code (the next page).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=PAGE_MAX)] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Drivers in code order, with their status and the vehicles they drive."""
    with context.transaction() as session:
        rows = fleet.list_drivers(session, after_code=context.driver_code(after) if after else None, limit=limit)
    _page(rows, limit, as_json, "drivers", ["code", "name", "msisdn", "status", "regular_of", "substitute_of"], "drivers")


@drivers.command("show")
def drivers_show(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    as_json: JsonFlag = False,
) -> None:
    """One driver: today's target and progress, money owed, in flight and paid, deposit, misses,
    status, assignment and rostered days off."""
    code = context.driver_code(driver)
    try:
        with context.transaction() as session:
            today = date.fromisoformat(context.today())
            document = driver_balance(session, code, today, context.settings())
            [listed] = fleet.list_drivers(session, only_code=code)
            document["days_off"] = [str(d) for d in fleet.days_off(session, fleet.get_driver(session, code).id, since=today)]
    except FleetError as error:
        raise fail(str(error)) from error
    document |= {key: listed[key] for key in ("name", "msisdn", "status", "regular_of", "substitute_of")}
    emit(document, as_json, title=f"driver {code}")


@drivers.command("sms")
def drivers_sms(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    user: UserActs,
    language: Annotated[Optional[str], typer.Option(help="en, sw, or default (the fleet's FLEETPAY_SMS_DEFAULT_LANGUAGE).")] = None,
    opt_out: Annotated[Optional[bool], typer.Option("--opt-out/--opt-in", help="Stop (or start again) the optional "
                                                    "notices: each payment, the daily summary.")] = None,
) -> None:
    """A driver's SMS: their language, and whether they get the optional notices. Payouts, delays,
    warnings and refunds are always sent. Recorded in the audit log under the console user named."""
    code = context.driver_code(driver)
    by = acting_user(user)
    try:
        with context.transaction() as session:
            changed = fleet.set_sms_preferences(session, code, language=language, opt_out=opt_out, by=by)
            said = (f"driver {code}: SMS in {changed.language or 'the default language'}, "
                    f"optional notices {'off' if changed.sms_opt_out else 'on'}")
    except FleetError as error:
        raise fail(str(error)) from error
    typer.echo(said)


@drivers.command("notices")
def drivers_notices(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    limit: Annotated[int, typer.Option(min=1, max=PAGE_MAX)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The SMS a driver was sent (or not, and why), newest first."""
    code = context.driver_code(driver)
    with context.transaction() as session:
        rows = notifications.for_driver(session, code, limit=limit)
    if as_json:
        emit_json({"notices": rows})
    else:
        emit_table(f"notices of {code}", rows, ["id", "kind", "state", "created_at", "message", "delivery", "error"])


@drivers.command("end-shift")
def drivers_end_shift(vehicle: Annotated[str, typer.Option(help="The vehicle whose substitute stands down.")]) -> None:
    """A substitute's shift ends: the vehicle's fares go to its regular driver again."""
    code = context.vehicle_code(vehicle)
    try:
        with context.transaction() as session:
            substitute = fleet.end_substitute_shift(session, code)
    except FleetError as error:
        raise fail(str(error)) from error
    typer.echo(f"substitute {substitute} of vehicle {code} stood down")


@drivers.command("reinstate")
def drivers_reinstate(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    reason: Annotated[str, typer.Option(help="Why the driver stays (recorded).")],
    user: UserActs,
    as_json: JsonFlag = False,
) -> None:
    """Clear a termination flag: the driver is active with no misses counted, and their unsent
    deposit refund goes back into the deposit. Give them a vehicle with `drivers assign`."""
    from money.standing import reinstate

    code, operator = context.driver_code(driver), acting_user(user)
    try:
        with context.transaction() as session:
            document = reinstate(session, code, operator=operator, reason=reason,
                                 business_date=date.fromisoformat(context.today()))
    except (FleetError, ValueError) as error:
        raise fail(str(error)) from error
    if as_json:
        emit_json(document)
        return
    typer.echo(f"driver {code} reinstated" + (f"; deposit refund withdrawn (payout {', '.join(map(str, document['refunds_withdrawn']))})"
                                              if document["refunds_withdrawn"] else ""))
    if document["refunds_already_released"]:
        typer.echo(f"note: deposit refund already released (payout {', '.join(map(str, document['refunds_already_released']))}): "
                   "it stays paid", err=True)


@drivers.command("day-off")
def drivers_day_off(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    on: Annotated[str, typer.Option("--date", help="Business date YYYY-MM-DD.")],
    user: UserActs,
    reason: Annotated[Optional[str], typer.Option(help="e.g. rostered rest day, vehicle in service.")] = None,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel a day off rostered before.")] = False,
) -> None:
    """Roster a day off: that day's close counts no miss and no shortfall for the driver (their
    fares still count). A day already closed is refused."""
    code, operator = context.driver_code(driver), acting_user(user)
    try:
        day = date.fromisoformat(on)
    except ValueError as error:
        raise fail(f"--date must be YYYY-MM-DD, not {on!r}", 2) from error
    try:
        with context.transaction() as session:
            changed = fleet.set_day_off(session, driver_code=code, day=day, off=not cancel, operator=operator,
                                        reason=reason)
    except ValueError as error:  # an unknown driver, a closed day, a name no one can act under
        raise fail(str(error)) from error
    what = "day off cancelled" if cancel else "day off rostered"
    typer.echo(f"{code} {day}: {what}" if changed else f"{code} {day}: nothing changed ({'no day off' if cancel else 'already a day off'})")


@deposits.command("topup")
def deposits_topup(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    amount_kes: Annotated[int, typer.Option(min=1, help="Whole shillings, kept back from what the driver is owed.")],
    reason: Annotated[str, typer.Option(help="Why, e.g. the driver's consent (recorded).")],
    user: UserActs,
    as_json: JsonFlag = False,
) -> None:
    """Top up a deposit from what the driver is owed (payable → deposit), with their consent."""
    from money.deposits import top_up

    operator = acting_user(user)
    _move_deposit(
        lambda session, today: top_up(session, context.driver_code(driver), amount_kes * 100, operator=operator,
                                      reason=reason, business_date=today),
        as_json,
        lambda done: f"deposit of {done['driver']} topped up by KES {kes(done['amount_cents'])}: now KES {kes(done['deposit_cents'])}",
    )


@deposits.command("refund")
def deposits_refund(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    user: UserAsks,
    amount_kes: Annotated[Optional[int], typer.Option(min=1, help="Whole shillings (default: the whole deposit).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask to pay a deposit back by B2C (split at the B2C maximum): it is paid once another user
    approves the request (four eyes)."""
    params = {"driver": context.driver_code(driver), "amount_cents": None if amount_kes is None else amount_kes * 100}
    ask_from_shell(user, "deposit_refund", params, reason, as_json=as_json,
                   done=lambda done: f"refund of KES {kes(done['amount_cents'])} to {params['driver']}: payouts "
                                     f"{', '.join(map(str, done['payout_ids']))} sent")


def _move_deposit(move: Callable[[Session, date], dict[str, Any]], as_json: bool, said: Callable[[dict[str, Any]], str]) -> None:
    """Run one deposit movement in a transaction of its own; print it, or why it was refused."""
    from money.deposits import DepositRefused

    try:
        with context.transaction() as session:
            document = move(session, date.fromisoformat(context.today()))
    except (FleetError, DepositRefused, ValueError) as error:
        raise fail(str(error)) from error
    if as_json:
        emit_json(document)
    else:
        typer.echo(said(document))


def balance(
    driver: Annotated[str, typer.Argument(help="Driver code, e.g. D112006")],
    on: Annotated[Optional[str], typer.Option("--date", help="Business date YYYY-MM-DD (default today).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A driver's target, contribution, payable, in-flight and paid-out money, and deposit."""
    try:
        business_date = date.fromisoformat(on or context.today())
    except ValueError as error:
        raise fail(f"--date must be YYYY-MM-DD, not {on!r}", 2) from error
    try:
        with context.transaction() as session:
            document = driver_balance(session, context.driver_code(driver), business_date, context.settings())
    except FleetError as error:
        raise fail(str(error)) from error
    emit(document, as_json, title=f"balance of {driver} on {business_date}")


@unmatched.command("list")
def unmatched_list(as_json: JsonFlag = False) -> None:
    """Payments posted to suspense (unknown account, or no active driver)."""
    from money.unmatched import list_unmatched

    with context.transaction() as session:
        found = list_unmatched(session)
    rows = [
        {
            "trans_id": p.trans_id,
            "amount_cents": p.amount_cents,
            "account_ref": p.account_ref,
            "trans_time": p.trans_time.isoformat(),
            "inbox_id": p.inbox_id,
        }
        for p in found
    ]
    if as_json:
        emit_json({"unmatched": rows, "total_cents": sum(p.amount_cents for p in found)})
    else:
        emit_table("unmatched payments", [{**r, "amount": kes(r["amount_cents"])} for r in rows],
                   ["trans_id", "amount", "account_ref", "trans_time", "inbox_id"])


@unmatched.command("assign")
def unmatched_assign(
    trans_id: Annotated[str, typer.Argument(help="The M-Pesa receipt, e.g. SHK3QX7T2M")],
    driver: Annotated[str, typer.Option(help="Driver code to give the money to.")],
    reason: Annotated[str, typer.Option(help="Why (kept on the posting).")],
    user: UserAsks,
    as_: Annotated[
        Optional[str], typer.Option("--as", help="fare (split, paid out) or company (driver paid); default from the account typed.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask to assign a payment in suspense to a driver, by the normal rules, with its original
    time: it is assigned once another user approves the request (four eyes)."""
    if as_ not in (None, "fare", "company"):
        raise fail("--as is fare or company", 2)
    params = {"trans_id": trans_id, "driver": context.driver_code(driver), **({"as": as_} if as_ else {})}
    ask_from_shell(user, "unmatched_assign", params, reason, as_json=as_json,
                   done=lambda done: f"{trans_id} assigned to {params['driver']}"
                                     + (f" (payout {done['payout_ids'][0]} sent)" if done.get("payout_ids") else ""))
