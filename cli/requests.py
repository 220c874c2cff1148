"""Money requests waiting for a second person (four eyes), from the shell: list, approve, reject.
The user named (``--user`` or ``FLEETPAY_USER``) is a console user; their role decides."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer

from cli import context
from cli.output import emit_json, emit_table, fail
from db.users import UserError, get_user
from money import requests as money_requests

requests_app = typer.Typer(help="Money movements asked for in the console, waiting for a second person to approve them.")

UserOption = Annotated[str, typer.Option("--user", envvar="FLEETPAY_USER", help="Your console username (approver or admin).")]


@requests_app.command("list")
def requests_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Requests waiting for a decision, oldest first."""
    with context.transaction() as session:
        rows = [{"id": r.id, "what": money_requests.describe(r), "reason": r.reason, "requested_by": r.requested_by,
                 "asked_at": r.created_at.isoformat()} for r in money_requests.pending(session)]
    if as_json:
        emit_json({"requests": rows})
    else:
        emit_table("requests waiting for a second person", rows, ["id", "what", "reason", "requested_by", "asked_at"])


def _decide(request_id: int, user: str, approve_it: bool, note: str) -> None:
    from workers.send_payout import send_payouts

    try:
        with context.transaction() as session:
            who = get_user(session, user)
            if who.disabled:
                raise fail(f"user {who.username} is disabled")
            decided = money_requests.decide(
                session, request_id, approver=money_requests.Asker(who.username, who.role), approve_it=approve_it,
                settings=context.settings(), business_date=date.fromisoformat(context.today()), note=note)
            state, outcome = decided.state, decided.outcome
    except (UserError, money_requests.RequestRefused) as error:
        raise fail(str(error)) from error
    if state == "done" and outcome and outcome.get("payout_ids"):
        send_payouts(list(outcome["payout_ids"]))
    if state == "failed":
        raise fail(f"request {request_id} approved, but it could not run: {(outcome or {}).get('error')}")
    typer.echo(f"request {request_id} {'approved and done' if state == 'done' else state} by {user}")


@requests_app.command("approve")
def requests_approve(request_id: Annotated[int, typer.Argument()], user: UserOption) -> None:
    """Approve someone else's request: it runs now."""
    _decide(request_id, user, True, "")


@requests_app.command("reject")
def requests_reject(
    request_id: Annotated[int, typer.Argument()],
    user: UserOption,
    note: Annotated[Optional[str], typer.Option(help="Why (recorded).")] = None,
) -> None:
    """Reject someone else's request: nothing runs."""
    _decide(request_id, user, False, note or "")
