"""Payout commands: see them, ask Daraja about one, pay again what is proven unpaid."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer

from cli import context
from cli.output import JsonFlag, emit_json, emit_table, fail, kes
from cli.requests import UserAsks, ask_from_shell
from db import fleet
from db.payouts import list_payouts, payout_detail
from fleetpay.payout_states import STATE_ORDER
from money.payouts import reserve_accrued

payouts = typer.Typer(help="B2C payouts to drivers: each share paid exactly once.")


@payouts.command("list")
def payouts_list(
    state: Annotated[Optional[str], typer.Option(help=f"One of {', '.join(STATE_ORDER)}.")] = None,
    driver: Annotated[Optional[str], typer.Option(help="Only this driver's.")] = None,
    after: Annotated[Optional[int], typer.Option(help="The next page: payouts older than this id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Payouts, newest first, a page at a time, with why each failed or waits for review."""
    if state and state not in STATE_ORDER:
        raise fail(f"--state is one of {', '.join(STATE_ORDER)}", 2)
    with context.transaction() as session:
        rows = list_payouts(session, state=state, driver_code=context.driver_code(driver) if driver else None,
                            before_id=after, limit=limit)
    next_after = rows[-1]["id"] if len(rows) == limit else None
    if as_json:
        emit_json({"payouts": rows, "next_after": next_after})
        return
    emit_table("payouts", [{**r, "amount": kes(int(r["amount_cents"]))} for r in rows],
               ["id", "driver", "amount", "state", "receipt", "result_code", "result_desc", "review_reason", "cause"])
    if next_after:
        typer.echo(f"more: run again with --after {next_after}")


def _facts(title: str, row: dict[str, object], names: tuple[str, ...]) -> None:
    """One field per line, the empty ones left out: readable in an 80-column terminal."""
    emit_table(title, [{"field": name, "value": row[name]} for name in names if row[name] not in (None, "")],
               ["field", "value"])


@payouts.command("show")
def payouts_show(payout_id: Annotated[int, typer.Argument()], as_json: JsonFlag = False) -> None:
    """One payout with its evidence: the status queries we sent and every result naming it, as its
    body reads (code, receipt, amount, payee) and as fleetpay took it."""
    with context.transaction() as session:
        detail = payout_detail(session, payout_id)
    if detail is None:
        raise fail(f"no payout {payout_id}")
    if as_json:
        emit_json(detail)
        return
    fields = ("id", "driver", "msisdn", "state", "review_reason", "receipt", "result_code", "result_desc",
              "status_result_code", "originator_conversation_id", "conversation_id", "attempts", "status_queries",
              "status_check_wanted", "requested_by", "approved_by", "created_at", "completed_at")
    _facts(f"payout {payout_id}: KES {kes(int(detail['amount_cents']))}", detail, fields)
    typer.echo(f"evidence: {len(detail['evidence'])} of {detail['evidence_total']} results naming it or our status queries")
    for row in detail["evidence"]:
        shown = {**row, "amount": kes(int(row["amount_cents"])) if row["amount_cents"] is not None else None}
        _facts(f"inbox {row['inbox_id']}: {row['kind']}" + (" (settled it)" if row["settled_it"] else ""), shown,
              ("received_at", "result_code", "result_desc", "transaction_status", "receipt", "amount", "payee", "payer",
               "status", "taken_as", "unreadable"))


@payouts.command("resolve")
def payouts_resolve(
    payout_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why M-Pesa is asked (recorded).")],
    user: UserAsks,
    as_json: JsonFlag = False,
) -> None:
    """Ask to put a payout in doubt (in review above all) to Daraja's Transaction Status: once
    another user approves (four eyes) the query goes out, and the answer settles it (paid wins;
    proven never received → sent again with the same OriginatorConversationID)."""
    ask_from_shell(user, "payout_resolve", {"payout_id": payout_id}, reason, as_json=as_json,
                   done=lambda done: f"payout {payout_id}: status asked; the answer arrives at status/result "
                                     "(see `fleetpay payouts show`)")


@payouts.command("retry")
def payouts_retry(
    payout_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it is paid again (recorded).")],
    user: UserAsks,
    as_json: JsonFlag = False,
) -> None:
    """Ask to pay again the amount of a FAILED payout (proven unpaid), as a new payout: it is
    sent once another user approves the request (four eyes)."""
    ask_from_shell(user, "payout_retry", {"payout_id": payout_id}, reason, as_json=as_json,
                   done=lambda done: f"payout {payout_id} retried as payout {done['payout_ids'][0]}")


@payouts.command("approve")
def payouts_approve(
    payout_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it may go (recorded).")],
    user: UserAsks,
    as_json: JsonFlag = False,
) -> None:
    """Ask to release a payout that waits for approval (a deposit refund, one held after an
    overpayment): it is sent once another user approves the request (four eyes)."""
    ask_from_shell(user, "payout_approve", {"payout_id": payout_id}, reason, as_json=as_json,
                   done=lambda done: f"payout {payout_id} released and sent")


@payouts.command("withdraw")
def payouts_withdraw(
    payout_id: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it is not to be paid (recorded).")],
    user: UserAsks,
    as_json: JsonFlag = False,
) -> None:
    """Ask to withdraw a payout waiting for approval that was never sent: once another user
    approves, it is not paid and its money is owed again (a deposit refund's goes back into the deposit)."""
    ask_from_shell(user, "payout_withdraw", {"payout_id": payout_id}, reason, as_json=as_json,
                   done=lambda done: f"payout {payout_id} withdrawn")


@payouts.command("send")
def payouts_send(driver: Annotated[Optional[str], typer.Option(help="Only this driver (default: all).")] = None) -> None:
    """Pay out what has accrued in drivers' payable accounts (e.g. with instant payouts off)."""
    from workers.send_payout import send_payouts

    current = context.settings()
    today = date.fromisoformat(context.today())
    with context.transaction() as session:
        codes = [context.driver_code(driver)] if driver else fleet.driver_codes(session)
    sent: list[int] = []
    for code in codes:
        try:
            with context.transaction() as session:
                sent.extend(payout.id for payout in reserve_accrued(session, code, current, business_date=today))
        except fleet.FleetError as error:
            raise fail(str(error)) from error
    send_payouts(sent)
    typer.echo(f"{len(sent)} payouts sent")
