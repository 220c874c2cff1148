"""Money requests waiting for a second person (four eyes), from the shell: list, approve, reject.
The user named (``--user`` or ``FLEETPAY_USER``) is a console user; their role decides."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Optional

import typer

from cli import context
from cli.output import emit_json, emit_table, fail
from db.users import UserError, get_user, role_at_least
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


def _asker(user: str) -> money_requests.Asker:
    """The console user ``user``, who must exist and be enabled (a usage error otherwise)."""
    try:
        with context.transaction() as session:
            who = get_user(session, user)
            if who.disabled:
                raise fail(f"user {who.username} is disabled")
            return money_requests.Asker(who.username, who.role)
    except UserError as error:
        raise fail(str(error)) from error


UserActs = Annotated[str, typer.Option("--user", "--operator", envvar="FLEETPAY_USER",
                                       help="Your console username (an operator or above): who did it (recorded).")]


def acting_user(user: str) -> str:
    """The console user who does something by hand from the shell (reinstate, a day off, a top-up):
    an enabled operator or above, by the name the record will show."""
    asker = _asker(user)
    if not role_at_least(asker.role, "operator"):
        raise fail(f"user {asker.username} is a {asker.role}: it takes an operator or above")
    return asker.username


def _sent(made: money_requests.Decided) -> None:
    from workers.follow_up import follow_up

    if made.state == "done":
        follow_up(made.outcome)  # committed; if Redis is down the payout sweep does it


def submit_as(user: str, kind: str, params: dict[str, Any], reason: str) -> money_requests.Decided:
    """Move money from the shell as the console user ``user``: a request another user approves
    (four eyes), or, with four eyes off, run at once (its payouts sent). ``RequestRefused`` when
    it could not run; exit 1 when it ran and failed."""
    asker = _asker(user)
    made = money_requests.submit(context.sessions(), kind, params, asker=asker, reason=reason,
                                 settings=context.settings(), business_date=date.fromisoformat(context.today()))
    _sent(made)
    if made.state == "failed":
        raise fail(f"request {made.id} could not run: {(made.outcome or {}).get('error')}")
    return made


def waiting(made: money_requests.Decided) -> str:
    return (f"request {made.id} made: it runs once another person approves it "
            f"(in the console, or: fleetpay requests approve {made.id} --user NAME)")


UserAsks = Annotated[str, typer.Option("--user", envvar="FLEETPAY_USER",
                                       help="Your console username: who asks (another user approves: four eyes).")]


def ask_from_shell(user: str, kind: str, params: dict[str, Any], reason: str, *, as_json: bool,
                   done: Callable[[dict[str, Any]], str]) -> None:
    """A money command's whole answer: the request made (and how to approve it), or, with four
    eyes off, what it did (``done`` says it); exit 1, nothing asked, when it could not run."""
    try:
        made = submit_as(user, kind, params, reason)
    except money_requests.RequestRefused as refused:
        raise fail(str(refused)) from refused
    if as_json:
        emit_json({"request": made.id, "state": made.state, "what": money_requests.describe(made), **(made.outcome or {})})
    elif made.state == "pending":
        typer.echo(f"{money_requests.describe(made)}: {waiting(made)}")
    else:
        typer.echo(done(made.outcome or {}))


def _decide(request_id: int, user: str, approve_it: bool, note: str) -> None:
    approver = _asker(user)
    try:
        decided = money_requests.settle(context.sessions(), request_id, approver=approver, approve_it=approve_it,
                                        settings=context.settings(), business_date=date.fromisoformat(context.today()),
                                        note=note)
    except money_requests.RequestRefused as error:
        raise fail(str(error)) from error
    _sent(decided)
    if decided.state == "failed":
        raise fail(f"request {request_id} approved, but it could not run: {(decided.outcome or {}).get('error')}")
    typer.echo(f"request {request_id} {'approved and done' if decided.state == 'done' else decided.state} by {user}")


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
