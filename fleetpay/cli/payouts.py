"""Payout commands: see them, ask Daraja about one, pay again what is proven unpaid."""

from __future__ import annotations

import secrets
from datetime import date
from typing import Annotated, Optional

import structlog
import typer
from sqlalchemy import select

from db import fleet
from db.models import Driver, Payout
from db.payouts import PayoutError, reserve_payable, retry_failed
from fleetpay.cli import context
from fleetpay.cli.output import emit_json, emit_table, fail, kes

payouts = typer.Typer(help="B2C payouts to drivers: each share paid exactly once.")

STATES = ("pending", "submitting", "submitted", "paid", "failed", "unknown")


def _row(payout: Payout, driver_code: str) -> dict[str, object]:
    return {
        "id": payout.id,
        "driver": driver_code,
        "amount_cents": payout.amount_cents,
        "state": payout.state,
        "originator_conversation_id": payout.originator_conversation_id,
        "receipt": payout.receipt,
        "result_code": payout.result_code,
        "result_desc": payout.result_desc,
        "attempts": payout.attempts,
        "requires_approval": payout.requires_approval,
        "cause": payout.cause_key,
        "created_at": payout.created_at.isoformat(),
        "updated_at": payout.updated_at.isoformat(),
    }


@payouts.command("list")
def payouts_list(
    state: Annotated[Optional[str], typer.Option(help=f"One of {', '.join(STATES)}.")] = None,
    driver: Annotated[Optional[str], typer.Option(help="Only this driver's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Payouts, newest first."""
    if state and state not in STATES:
        raise fail(f"--state is one of {', '.join(STATES)}", 2)
    query = select(Payout, Driver.code).join(Driver, Driver.id == Payout.driver_id).order_by(Payout.id.desc()).limit(limit)
    if state:
        query = query.where(Payout.state == state)
    if driver:
        query = query.where(Driver.code == driver)
    with context.transaction() as session:
        rows = [_row(payout, code) for payout, code in session.execute(query).all()]
    if as_json:
        emit_json({"payouts": rows})
    else:
        emit_table("payouts", [{**r, "amount": kes(int(r["amount_cents"]))} for r in rows],  # type: ignore[arg-type]
                   ["id", "driver", "amount", "state", "receipt", "result_code", "attempts", "cause"])


@payouts.command("resolve")
def payouts_resolve(payout_id: Annotated[int, typer.Argument()]) -> None:
    """Ask Daraja's Transaction Status about a payout now; the answer settles it
    (paid wins; proven never received → sent again with the same OriginatorConversationID)."""
    from workers.check_payout_status import check_payout_status

    with context.transaction() as session:
        payout = session.get(Payout, payout_id)
        if payout is None:
            raise fail(f"no payout {payout_id}")
        state = payout.state
    if state not in ("submitted", "unknown"):
        raise fail(f"payout {payout_id} is {state}: only submitted or unknown payouts need resolving")
    check_payout_status(payout_id)  # runs here, not on the queue
    typer.echo(f"payout {payout_id}: status asked; the answer arrives at status/result (see `fleetpay payouts list`)")


@payouts.command("retry")
def payouts_retry(payout_id: Annotated[int, typer.Argument()]) -> None:
    """Pay again the amount of a FAILED payout (proven unpaid), as a new payout."""
    from workers.send_payout import send_payout

    try:
        with context.transaction() as session:
            new = retry_failed(session, payout_id, context.settings(), business_date=date.fromisoformat(context.today()))
            new_id = new.id
    except PayoutError as error:
        raise fail(str(error)) from error
    send_payout.send(new_id)
    typer.echo(f"payout {payout_id} retried as payout {new_id}")


@payouts.command("approve")
def payouts_approve(
    payout_id: Annotated[int, typer.Argument()],
    operator: Annotated[str, typer.Option(help="Who approves (logged).")],
) -> None:
    """Release a payout that waits for approval (a deposit refund on exit) to be sent."""
    from sqlalchemy import update

    from workers.send_payout import send_payout

    with context.transaction() as session:
        approved = session.execute(
            update(Payout)
            .where(Payout.id == payout_id, Payout.requires_approval.is_(True), Payout.state == "pending")
            .values(requires_approval=False)
            .returning(Payout.id)
        ).scalar_one_or_none()
    if approved is None:
        raise fail(f"payout {payout_id} is not a pending payout waiting for approval")
    structlog.get_logger("fleetpay.payouts").warning("payout_approved", payout_id=payout_id, operator=operator)
    send_payout.send(payout_id)
    typer.echo(f"payout {payout_id} approved by {operator} and sent")


@payouts.command("send")
def payouts_send(driver: Annotated[Optional[str], typer.Option(help="Only this driver (default: all).")] = None) -> None:
    """Pay out what has accrued in drivers' payable accounts (e.g. with instant payouts off)."""
    from workers.send_payout import send_payout

    current = context.settings()
    today = date.fromisoformat(context.today())
    sent: list[int] = []
    with context.transaction() as session:
        codes = [driver] if driver else list(session.execute(select(Driver.code).order_by(Driver.code)).scalars())
    for code in codes:
        try:
            with context.transaction() as session:
                locked = fleet.lock_driver(session, fleet.get_driver(session, code).id)
                payout = reserve_payable(session, locked, current, cause_key=f"accrued:{code}:{secrets.token_hex(4)}", business_date=today)
                if payout:
                    sent.append(payout.id)
        except fleet.FleetError as error:
            raise fail(str(error)) from error
    for payout_id in sent:
        send_payout.send(payout_id)
    typer.echo(f"{len(sent)} payouts sent")
